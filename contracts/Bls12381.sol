// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title BLS12-381 signatures checked with the EIP-2537 precompiles (Prague)
/// @notice Hashing to the curve (RFC 9380, expand_message_xmd with SHA-256), point
/// compression (the ZCash encoding every BLS library and drand use) and the pairing check.
/// Points are in the precompiles' uncompressed form: a field element is 64 bytes, big
/// endian, its top 16 bytes zero; a G1 point is x ‖ y (128 bytes), a G2 point
/// x.c0 ‖ x.c1 ‖ y.c0 ‖ y.c1 (256 bytes). The pairing precompile checks that every point
/// is on its curve and in the prime-order subgroup, so a forged point makes the check fail.
library Bls12381 {
    address private constant G1_ADD = address(0x0b);
    address private constant PAIRING = address(0x0f);
    address private constant MAP_FP_TO_G1 = address(0x10);
    address private constant MAP_FP2_TO_G2 = address(0x11);
    address private constant MODEXP = address(0x05);
    address private constant G2_ADD = address(0x0d);

    /// (p − 1) / 2 as the two words of its 64-byte encoding: a coordinate above it is the
    /// "lexicographically largest" root, whose compressed form carries the sign flag.
    uint256 private constant HALF_HI = 0x000000000000000000000000000000000d0088f51cbff34d258dd3db21a5d66b;
    uint256 private constant HALF_LO = 0xb23ba5c279c2895fb39869507b587b120f55ffff58a9ffffdcff7fffffffd555;

    /// The field modulus p, 48 bytes, for the MODEXP reduction of a 64-byte hash output.
    bytes private constant MODULUS =
        hex"1a0111ea397fe69a4b1ba7b6434bacd764774b84f38512bf6730d2a0f6b0f6241eabfffeb153ffffb9feffffffffaaab";

    /// A precompile refused its input: a point off the curve or outside the subgroup, or a
    /// coordinate not below p.
    error PrecompileFailed(address precompile);

    /// The uniform bytes of RFC 9380 §5.3.1 (expand_message_xmd, SHA-256), `length` ≤ 255·32.
    function expandMessageXmd(bytes memory message, bytes memory dst, uint16 length)
        internal
        pure
        returns (bytes memory out)
    {
        uint256 blocks = (uint256(length) + 31) / 32;
        bytes memory dstPrime = abi.encodePacked(dst, uint8(dst.length));
        bytes32 b0 = sha256(abi.encodePacked(bytes32(0), bytes32(0), message, length, uint8(0), dstPrime));
        bytes32 bi = sha256(abi.encodePacked(b0, uint8(1), dstPrime));
        out = new bytes(blocks * 32);
        assembly ("memory-safe") {
            mstore(add(out, 32), bi)
        }
        for (uint256 i = 2; i <= blocks; i++) {
            bi = sha256(abi.encodePacked(b0 ^ bi, uint8(i), dstPrime));
            assembly ("memory-safe") {
                mstore(add(out, mul(i, 32)), bi)
            }
        }
        assembly ("memory-safe") {
            mstore(out, length)
        }
    }

    /// 64 bytes of `data` at `offset`, as an integer reduced mod p, in the 64-byte encoding.
    function reduce(bytes memory data, uint256 offset) internal view returns (bytes memory element) {
        bytes memory input = abi.encodePacked(
            uint256(64), uint256(1), uint256(48), _slice64(data, offset), uint8(1), MODULUS
        );
        (bool ok, bytes memory reduced) = MODEXP.staticcall(input);
        if (!ok || reduced.length != 48) revert PrecompileFailed(MODEXP);
        element = abi.encodePacked(bytes16(0), reduced);
    }

    /// RFC 9380 hash_to_curve onto G1 (suite BLS12381G1_XMD:SHA-256_SSWU_RO_). The map
    /// precompile clears the cofactor of each point; clearing is a homomorphism, so the sum
    /// of the two cleared points is the hash.
    function hashToG1(bytes memory message, bytes memory dst) internal view returns (bytes memory) {
        bytes memory uniform = expandMessageXmd(message, dst, 128);
        bytes memory q0 = _call(MAP_FP_TO_G1, reduce(uniform, 0), 128);
        bytes memory q1 = _call(MAP_FP_TO_G1, reduce(uniform, 64), 128);
        return _call(G1_ADD, abi.encodePacked(q0, q1), 128);
    }

    /// RFC 9380 hash_to_curve onto G2 (suite BLS12381G2_XMD:SHA-256_SSWU_RO_).
    function hashToG2(bytes memory message, bytes memory dst) internal view returns (bytes memory) {
        bytes memory uniform = expandMessageXmd(message, dst, 256);
        bytes memory u0 = abi.encodePacked(reduce(uniform, 0), reduce(uniform, 64));
        bytes memory u1 = abi.encodePacked(reduce(uniform, 128), reduce(uniform, 192));
        bytes memory q0 = _call(MAP_FP2_TO_G2, u0, 256);
        bytes memory q1 = _call(MAP_FP2_TO_G2, u1, 256);
        return _call(G2_ADD, abi.encodePacked(q0, q1), 256);
    }

    /// The 48-byte compressed encoding of an uncompressed G1 point (not the point at infinity).
    function compressG1(bytes memory point) internal pure returns (bytes memory) {
        (uint256 xHi, uint256 xLo) = _words(point, 0);
        (uint256 yHi, uint256 yLo) = _words(point, 64);
        uint8 flags = _isLarge(yHi, yLo) ? 0xa0 : 0x80;
        return abi.encodePacked(bytes16(uint128(xHi)) | bytes16(bytes1(flags)), xLo);
    }

    /// The 96-byte compressed encoding of an uncompressed G2 point: x.c1 ‖ x.c0, flags on the
    /// first byte; the sign is that of y.c1, or of y.c0 when y.c1 is zero.
    function compressG2(bytes memory point) internal pure returns (bytes memory) {
        (uint256 x0Hi, uint256 x0Lo) = _words(point, 0);
        (uint256 x1Hi, uint256 x1Lo) = _words(point, 64);
        (uint256 y0Hi, uint256 y0Lo) = _words(point, 128);
        (uint256 y1Hi, uint256 y1Lo) = _words(point, 192);
        bool large = (y1Hi | y1Lo) == 0 ? _isLarge(y0Hi, y0Lo) : _isLarge(y1Hi, y1Lo);
        uint8 flags = large ? 0xa0 : 0x80;
        return abi.encodePacked(
            bytes16(uint128(x1Hi)) | bytes16(bytes1(flags)), x1Lo, bytes16(uint128(x0Hi)), x0Lo
        );
    }

    /// Whether e(a1, b1) · e(a2, b2) = 1; false when the precompile refuses a point.
    function pairingHolds(bytes memory a1, bytes memory b1, bytes memory a2, bytes memory b2)
        internal
        view
        returns (bool)
    {
        (bool ok, bytes memory out) = PAIRING.staticcall(abi.encodePacked(a1, b1, a2, b2));
        return ok && out.length == 32 && uint256(bytes32(out)) == 1;
    }

    function _call(address precompile, bytes memory input, uint256 outLength)
        private
        view
        returns (bytes memory out)
    {
        bool ok;
        (ok, out) = precompile.staticcall(input);
        if (!ok || out.length != outLength) revert PrecompileFailed(precompile);
    }

    function _slice64(bytes memory data, uint256 offset) private pure returns (bytes memory out) {
        out = new bytes(64);
        assembly ("memory-safe") {
            mstore(add(out, 32), mload(add(add(data, 32), offset)))
            mstore(add(out, 64), mload(add(add(data, 64), offset)))
        }
    }

    function _words(bytes memory point, uint256 offset) private pure returns (uint256 hi, uint256 lo) {
        assembly ("memory-safe") {
            hi := mload(add(add(point, 32), offset))
            lo := mload(add(add(point, 64), offset))
        }
    }

    function _isLarge(uint256 hi, uint256 lo) private pure returns (bool) {
        return hi > HALF_HI || (hi == HALF_HI && lo > HALF_LO);
    }
}
