//! RS256 verification: RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017 §8.2.2), the public-key side
//! only, on `num-bigint`.
//!
//! Why not the `rsa` crate's verifier: it does the same arithmetic on `num-bigint-dig`, which
//! `rsa` builds with 64-bit digits. `wasm32` has no 64×64→128 multiply, so every digit product
//! is an emulated `u128` multiplication, and `modpow` runs a fixed 4-bit window over whole
//! digits (about 80 Montgomery products where e = 65537 needs 17). An RS256 verify cost about
//! 1.1–1.3 ms in the gateway. Here `num-bigint` (32-bit digits on 32-bit targets) and
//! [`pow_vartime`] do it in about 0.23 ms (`health-bench`'s JOSE micro-benchmarks). Nothing
//! here is secret (signature, key and message are public), so variable time is fine. The
//! padding check builds the one valid encoding and compares it whole (as `rsa` does); it never
//! parses the recovered block.
//!
//! Signing, key generation and RSA-OAEP stay on the `rsa` crate. Tests check this verifier
//! against `rsa`'s on random keys and against the published vectors (Wycheproof, RFC 7520).

use num_bigint::BigUint;
use sha2::{Digest, Sha256};

/// DER of `DigestInfo { AlgorithmIdentifier { id-sha256, NULL }, OCTET STRING (32) }`, the
/// prefix of the hash in EMSA-PKCS1-v1_5 (RFC 8017 §9.2, note 1).
const SHA256_DIGEST_INFO: [u8; 19] =
    [0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20];
/// Modulus and public-exponent bounds: the platform's minimum key size, and the `rsa` crate's
/// other limits (`RsaPublicKey::new`).
const MIN_MODULUS_BITS: u64 = crate::jwk::RSA_BITS as u64;
const MAX_MODULUS_BITS: u64 = 4096;
const MAX_EXPONENT: u64 = (1 << 33) - 1;

/// An RSA public key checked for verification: odd modulus of 2048 to 4096 bits, odd public
/// exponent from 3 to 2³³−1.
#[derive(Debug, Clone)]
pub(crate) struct VerifyingKey {
    n: BigUint,
    e: BigUint,
    /// Length of the modulus in bytes: every signature and encoded message has exactly this.
    k: usize,
}

impl VerifyingKey {
    /// The key of big-endian `n` and `e`, or `None` if it is outside the bounds above.
    pub(crate) fn new(n: &[u8], e: &[u8]) -> Option<Self> {
        let n = BigUint::from_bytes_be(n);
        let e = BigUint::from_bytes_be(e);
        let odd = |x: &BigUint| x.bit(0);
        let sized = (MIN_MODULUS_BITS..=MAX_MODULUS_BITS).contains(&n.bits());
        let exponent = e >= BigUint::from(3u8) && e <= BigUint::from(MAX_EXPONENT);
        if !(sized && exponent && odd(&n) && odd(&e)) {
            return None;
        }
        let k = usize::try_from(n.bits().div_ceil(8)).ok()?;
        Some(Self { n, e, k })
    }

    pub(crate) fn modulus(&self) -> &BigUint {
        &self.n
    }

    pub(crate) fn exponent(&self) -> &BigUint {
        &self.e
    }

    /// Whether `signature` is a valid RS256 signature of `message` under this key.
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        // §8.2.2 step 1: the signature is exactly k octets.
        if signature.len() != self.k {
            return false;
        }
        // §5.2.2 RSAVP1: the representative must be less than n.
        let s = BigUint::from_bytes_be(signature);
        if s >= self.n {
            return false;
        }
        let m = pow_vartime(&s, &self.e, &self.n).to_bytes_be();
        let Some(expected) = self.encoded(message) else { return false };
        // I2OSP(m, k): m < n, so it has at most k octets; left-pad by comparing the zero prefix.
        let pad = self.k - m.len().min(self.k);
        expected[..pad].iter().all(|&b| b == 0) && expected[pad..] == m[..]
    }

    /// EMSA-PKCS1-v1_5-ENCODE(SHA-256(message), k): `00 01 FF… 00 DigestInfo H`.
    fn encoded(&self, message: &[u8]) -> Option<Vec<u8>> {
        let t_len = SHA256_DIGEST_INFO.len() + 32;
        // At least eight 0xFF octets (RFC 8017 §9.2 step 3); always true for k ≥ 256.
        let ps_len = self.k.checked_sub(t_len + 3).filter(|&ps| ps >= 8)?;
        let mut em = Vec::with_capacity(self.k);
        em.extend_from_slice(&[0x00, 0x01]);
        em.resize(2 + ps_len, 0xff);
        em.push(0x00);
        em.extend_from_slice(&SHA256_DIGEST_INFO);
        em.extend_from_slice(&Sha256::digest(message));
        Some(em)
    }
}

/// `base^exponent mod modulus` by left-to-right square-and-multiply, for a small public
/// exponent (e = 65537: 16 squarings and one multiplication). `BigUint::modpow` runs a fixed
/// 4-bit window over whole digits, about 80 Montgomery products for the same exponent, 3–4×
/// slower here. `base < modulus` and `exponent ≥ 1`.
fn pow_vartime(base: &BigUint, exponent: &BigUint, modulus: &BigUint) -> BigUint {
    let mut acc = base.clone();
    for bit in (0..exponent.bits().saturating_sub(1)).rev() {
        acc = &acc * &acc % modulus;
        if exponent.bit(bit) {
            acc = acc * base % modulus;
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::{RngCore, SeedableRng};
    use rsa::signature::{SignatureEncoding, Signer, Verifier};
    use rsa::traits::PublicKeyParts;

    use super::*;

    /// `rsa`'s verifier, the independent implementation this one must agree with.
    fn reference(key: &rsa::RsaPublicKey, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = rsa::pkcs1v15::Signature::try_from(signature) else { return false };
        rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key.clone()).verify(message, &signature).is_ok()
    }

    fn ours(key: &rsa::RsaPublicKey) -> VerifyingKey {
        VerifyingKey::new(&key.n().to_bytes_be(), &key.e().to_bytes_be()).expect("a 2048-bit key with e = 65537")
    }

    #[test]
    fn agrees_with_the_rsa_crate_on_valid_altered_and_foreign_signatures() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let private = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let other = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let public = private.to_public_key();
        let key = ours(&public);
        let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(private);
        let foreign = rsa::pkcs1v15::SigningKey::<Sha256>::new(other);
        let (mut accepted, mut refused) = (0, 0);
        for round in 0..40u32 {
            let mut message = vec![0u8; (round as usize * 37) % 300];
            rng.fill_bytes(&mut message);
            let good = signer.sign(&message).to_vec();
            let mut candidates = vec![good.clone(), foreign.sign(&message).to_vec()];
            let mut flipped = good.clone();
            let at = (round as usize * 11) % flipped.len();
            flipped[at] ^= 1 << (round % 8);
            candidates.push(flipped);
            candidates.push(good[1..].to_vec());
            candidates.push([&[0u8][..], &good].concat());
            // s = n and s > n: out of range, whatever their value mod n.
            candidates.push(public.n().to_bytes_be());
            candidates.push(vec![0xff; good.len()]);
            let mut other_message = message.clone();
            other_message.push(round as u8);
            for signature in &candidates {
                let expected = reference(&public, &message, signature);
                assert_eq!(key.verify(&message, signature), expected, "round {round}");
                if expected { accepted += 1 } else { refused += 1 }
            }
            assert!(!key.verify(&other_message, &good));
        }
        assert_eq!((accepted, refused), (40, 240));
    }

    #[test]
    fn agrees_on_padding_built_by_hand_and_raw_signed() {
        // Encodings a sloppy parser accepts: wrong block type, no separator, a zero inside the
        // padding, the hash shifted. "Signed" with the private exponent so only the padding is wrong.
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let private = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let public = private.to_public_key();
        let key = ours(&public);
        let message = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJwLTEwMDEifQ";
        let good = key.encoded(message).unwrap();
        let raw_sign = |em: &[u8]| {
            let m = BigUint::from_bytes_be(em);
            let d = BigUint::from_bytes_be(&rsa::traits::PrivateKeyParts::d(&private).to_bytes_be());
            let s = m.modpow(&d, key.modulus()).to_bytes_be();
            [vec![0u8; key.k - s.len()], s].concat()
        };
        let mut variants = vec![good.clone()];
        let mut block_type_2 = good.clone();
        block_type_2[1] = 2;
        variants.push(block_type_2);
        let mut no_separator = good.clone();
        let at = good.len() - 32 - SHA256_DIGEST_INFO.len();
        no_separator.remove(at - 1);
        no_separator.insert(2, 0xff);
        variants.push(no_separator);
        let mut garbage_in_ps = good.clone();
        garbage_in_ps[10] = 0x00;
        variants.push(garbage_in_ps);
        let mut shifted = good.clone();
        shifted.remove(2);
        shifted.push(0x00);
        variants.push(shifted);
        let verdicts: Vec<bool> = variants
            .iter()
            .map(|em| {
                let signature = raw_sign(em);
                let ours = key.verify(message, &signature);
                assert_eq!(ours, reference(&public, message, &signature));
                ours
            })
            .collect();
        assert_eq!(verdicts, [true, false, false, false, false]);
    }

    #[test]
    fn square_and_multiply_agrees_with_modpow() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let mut random = |len: usize| {
            let mut bytes = vec![0u8; len];
            rng.fill_bytes(&mut bytes);
            BigUint::from_bytes_be(&bytes)
        };
        for round in 0..50 {
            let modulus = random(256) | BigUint::from(1u8);
            let base = random(255);
            let exponent =
                [BigUint::from(65_537u32), BigUint::from(3u8), random(5), random(1) + 1u8][round % 4].clone();
            assert_eq!(pow_vartime(&base, &exponent, &modulus), base.modpow(&exponent, &modulus), "round {round}");
        }
    }

    #[test]
    fn refuses_keys_outside_the_bounds() {
        let n2048 = [&[0xc0][..], &[0x5a; 254], &[0x01]].concat();
        assert!(VerifyingKey::new(&n2048, &[1, 0, 1]).is_some());
        assert!(VerifyingKey::new(&n2048[1..], &[1, 0, 1]).is_none(), "2040 bits");
        assert!(VerifyingKey::new(&[&[0x01][..], &[0; 512]].concat(), &[1, 0, 1]).is_none(), "4097 bits, even");
        let mut even = n2048.clone();
        *even.last_mut().unwrap() = 0x02;
        assert!(VerifyingKey::new(&even, &[1, 0, 1]).is_none());
        for e in [&[1u8][..], &[0x01, 0x00, 0x00], &[0x02, 0, 0, 0, 1]] {
            assert!(VerifyingKey::new(&n2048, e).is_none(), "e = {e:?}");
        }
        assert!(VerifyingKey::new(&n2048, &[3]).is_some());
    }
}
