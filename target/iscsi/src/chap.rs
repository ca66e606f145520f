//! CHAP (RFC 1994) as profiled by RFC 7143 §12.1.3, target side.
//!
//! The exchange in the security stage, after `AuthMethod=CHAP` was agreed:
//!
//! ```text
//! I->T  CHAP_A=<A1,A2,...>                 algorithms, the initiator's preference first
//! T->I  CHAP_A=<A> CHAP_I=<I> CHAP_C=<C>   chosen algorithm, identifier, random challenge
//! I->T  CHAP_N=<N> CHAP_R=<R>              R = H(I || secret || C)
//!       [CHAP_I=<I'> CHAP_C=<C'>]          mutual CHAP: the initiator's own challenge
//! T->I  [CHAP_N=<N'> CHAP_R=<R'>]          mutual CHAP: R' = H(I' || target secret || C')
//! ```
//!
//! Algorithms: MD5 (5, mandatory), SHA1 (6), SHA-256 (7), SHA3-256 (8) (the codes Linux and
//! RFC 7143's IANA registry use). Challenges are [`CHALLENGE_LEN`] bytes from the OS CSPRNG.
//! The target refuses a reflected challenge (the initiator's CHAP_C equal to ours) and a
//! configuration where the initiator's secret equals the target's mutual secret (RFC 7143
//! §12.1.3: the two secrets must differ).

use crate::ChapCredentials;
use crate::text;

/// Bytes in a challenge the target sends.
pub const CHALLENGE_LEN: usize = 32;
/// Largest challenge accepted from an initiator (RFC 7143 §12.1.3 caps CHAP_C at 1024 bytes).
pub const MAX_CHALLENGE_LEN: usize = 1024;

/// CHAP failures; each ends the login with status 0x0201 (authentication failure).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, displaydoc::Display)]
pub enum ChapError {
    /// none of the offered CHAP algorithms ({0}) is supported
    UnsupportedAlgorithm(String),
    /// the operating system's random number generator failed
    Random,
    /// CHAP key {0} is missing
    Missing(&'static str),
    /// CHAP_N {0:?} is not the expected user
    WrongName(String),
    /// CHAP_R is malformed or of the wrong length
    BadResponse,
    /// CHAP_R does not match
    WrongResponse,
    /// the initiator's CHAP_I is not a number from 0 to 255
    BadIdentifier,
    /// the initiator's CHAP_C is malformed or too long
    BadChallenge,
    /// the initiator reflected the target's challenge
    ReflectedChallenge,
    /// the initiator asked for mutual CHAP but the target has no credentials for it
    NoMutualCredentials,
    /// the target's mutual CHAP secret equals the initiator's secret
    SameSecret,
}

/// CHAP digest algorithms (CHAP_A values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChapAlgorithm {
    /// MD5 (5).
    Md5,
    /// SHA1 (6).
    Sha1,
    /// SHA-256 (7).
    Sha256,
    /// SHA3-256 (8).
    Sha3_256,
}

impl ChapAlgorithm {
    /// The CHAP_A code.
    pub fn code(self) -> u8 {
        match self {
            ChapAlgorithm::Md5 => 5,
            ChapAlgorithm::Sha1 => 6,
            ChapAlgorithm::Sha256 => 7,
            ChapAlgorithm::Sha3_256 => 8,
        }
    }

    /// The algorithm for a CHAP_A code.
    pub fn from_code(code: u64) -> Option<ChapAlgorithm> {
        match code {
            5 => Some(ChapAlgorithm::Md5),
            6 => Some(ChapAlgorithm::Sha1),
            7 => Some(ChapAlgorithm::Sha256),
            8 => Some(ChapAlgorithm::Sha3_256),
            _ => None,
        }
    }

    /// Bytes in a response.
    pub fn digest_len(self) -> usize {
        match self {
            ChapAlgorithm::Md5 => 16,
            ChapAlgorithm::Sha1 => 20,
            ChapAlgorithm::Sha256 | ChapAlgorithm::Sha3_256 => 32,
        }
    }

    /// The CHAP response `H(id || secret || challenge)`.
    pub fn response(self, id: u8, secret: &[u8], challenge: &[u8]) -> Vec<u8> {
        fn run<D: sha2::Digest>(id: u8, secret: &[u8], challenge: &[u8]) -> Vec<u8> {
            let mut h = D::new();
            h.update([id]);
            h.update(secret);
            h.update(challenge);
            h.finalize().to_vec()
        }
        match self {
            ChapAlgorithm::Md5 => run::<md5::Md5>(id, secret, challenge),
            ChapAlgorithm::Sha1 => run::<sha1::Sha1>(id, secret, challenge),
            ChapAlgorithm::Sha256 => run::<sha2::Sha256>(id, secret, challenge),
            ChapAlgorithm::Sha3_256 => run::<sha3::Sha3_256>(id, secret, challenge),
        }
    }
}

/// The first algorithm of a CHAP_A list that is supported (the initiator's order decides).
pub fn select_algorithm(offer: &str) -> Option<ChapAlgorithm> {
    text::list(offer)
        .filter_map(text::parse_number)
        .find_map(ChapAlgorithm::from_code)
}

/// Compares two byte strings in time that depends only on their lengths.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The target's half of one CHAP exchange: the algorithm, identifier and challenge it sent.
#[derive(Clone, PartialEq, Eq)]
pub struct TargetChap {
    algorithm: ChapAlgorithm,
    id: u8,
    challenge: Vec<u8>,
}

impl std::fmt::Debug for TargetChap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetChap")
            .field("algorithm", &self.algorithm)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// What the target answers to a correct CHAP_R when the initiator asked for mutual CHAP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutualAnswer {
    /// CHAP_N: the target's user name.
    pub name: String,
    /// CHAP_R, hex encoded.
    pub response: String,
}

impl TargetChap {
    /// Starts an exchange from the initiator's CHAP_A list: picks the algorithm and draws an
    /// identifier and a challenge from the OS CSPRNG.
    ///
    /// # Errors
    ///
    /// [`ChapError::UnsupportedAlgorithm`], [`ChapError::Random`].
    pub fn start(chap_a: &str) -> Result<TargetChap, ChapError> {
        let algorithm = select_algorithm(chap_a)
            .ok_or_else(|| ChapError::UnsupportedAlgorithm(chap_a.to_string()))?;
        let mut buf = [0u8; CHALLENGE_LEN + 1];
        getrandom::fill(&mut buf).map_err(|_| ChapError::Random)?;
        Ok(TargetChap {
            algorithm,
            id: buf[0],
            challenge: buf[1..].to_vec(),
        })
    }

    /// An exchange with a chosen identifier and challenge (tests, known-answer vectors).
    pub fn with_challenge(algorithm: ChapAlgorithm, id: u8, challenge: Vec<u8>) -> TargetChap {
        TargetChap {
            algorithm,
            id,
            challenge,
        }
    }

    /// The algorithm chosen.
    pub fn algorithm(&self) -> ChapAlgorithm {
        self.algorithm
    }

    /// CHAP_I.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// CHAP_C (raw bytes).
    pub fn challenge(&self) -> &[u8] {
        &self.challenge
    }

    /// The keys the target sends: `CHAP_A`, `CHAP_I`, `CHAP_C` (hex).
    pub fn offer(&self) -> [(&'static str, String); 3] {
        [
            ("CHAP_A", self.algorithm.code().to_string()),
            ("CHAP_I", self.id.to_string()),
            ("CHAP_C", text::encode_hex(&self.challenge)),
        ]
    }

    /// Checks the initiator's CHAP_N and CHAP_R against `expected`, then, when the initiator
    /// sent its own CHAP_I and CHAP_C (mutual CHAP), answers them with `mutual`.
    ///
    /// # Errors
    ///
    /// A [`ChapError`] for a wrong name or response, malformed keys, a reflected challenge, or
    /// missing or unusable mutual credentials.
    pub fn verify(
        &self,
        expected: &ChapCredentials,
        mutual: Option<&ChapCredentials>,
        name: Option<&str>,
        response: Option<&str>,
        initiator_id: Option<&str>,
        initiator_challenge: Option<&str>,
    ) -> Result<Option<MutualAnswer>, ChapError> {
        let name = name.ok_or(ChapError::Missing("CHAP_N"))?;
        let response = response.ok_or(ChapError::Missing("CHAP_R"))?;
        let got = text::decode_binary(response).ok_or(ChapError::BadResponse)?;
        if got.len() != self.algorithm.digest_len() {
            return Err(ChapError::BadResponse);
        }
        let want = self
            .algorithm
            .response(self.id, expected.secret.as_bytes(), &self.challenge);
        // Check the response before the name so a wrong name costs as much as a wrong secret.
        let response_ok = ct_eq(&got, &want);
        if name != expected.user {
            return Err(ChapError::WrongName(name.to_string()));
        }
        if !response_ok {
            return Err(ChapError::WrongResponse);
        }
        match (initiator_id, initiator_challenge) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(ChapError::Missing("CHAP_I")),
            (Some(_), None) => Err(ChapError::Missing("CHAP_C")),
            (Some(i), Some(c)) => {
                let id = text::parse_number(i)
                    .and_then(|v| u8::try_from(v).ok())
                    .ok_or(ChapError::BadIdentifier)?;
                let challenge = text::decode_binary(c).ok_or(ChapError::BadChallenge)?;
                if challenge.is_empty() || challenge.len() > MAX_CHALLENGE_LEN {
                    return Err(ChapError::BadChallenge);
                }
                if ct_eq(&challenge, &self.challenge) {
                    return Err(ChapError::ReflectedChallenge);
                }
                let mutual = mutual.ok_or(ChapError::NoMutualCredentials)?;
                if ct_eq(mutual.secret.as_bytes(), expected.secret.as_bytes()) {
                    return Err(ChapError::SameSecret);
                }
                let r = self
                    .algorithm
                    .response(id, mutual.secret.as_bytes(), &challenge);
                Ok(Some(MutualAnswer {
                    name: mutual.user.clone(),
                    response: text::encode_hex(&r),
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(user: &str, secret: &str) -> ChapCredentials {
        ChapCredentials {
            user: user.into(),
            secret: secret.into(),
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        text::decode_binary(&format!("0x{s}")).expect("hex")
    }

    #[test]
    fn known_answers() {
        // H(id || secret || challenge) with id = 'a', secret = "b", challenge = "c" is H("abc"),
        // whose digests are the published test vectors of each algorithm.
        let cases = [
            (ChapAlgorithm::Md5, "900150983cd24fb0d6963f7d28e17f72"),
            (
                ChapAlgorithm::Sha1,
                "a9993e364706816aba3e25717850c26c9cd0d89d",
            ),
            (
                ChapAlgorithm::Sha256,
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
            (
                ChapAlgorithm::Sha3_256,
                "3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532",
            ),
        ];
        for (alg, digest) in cases {
            assert_eq!(alg.response(b'a', b"b", b"c"), hex(digest), "{alg:?}");
            assert_eq!(alg.digest_len(), hex(digest).len());
        }
        // RFC 1321 test suite: MD5("message digest").
        assert_eq!(
            ChapAlgorithm::Md5.response(b'm', b"essage ", b"digest"),
            hex("f96b697d7cb7938d525a2f31aaf161d0")
        );
    }

    #[test]
    fn algorithm_selection_follows_initiator_order() {
        assert_eq!(select_algorithm("5"), Some(ChapAlgorithm::Md5));
        assert_eq!(select_algorithm("7,6,5"), Some(ChapAlgorithm::Sha256));
        assert_eq!(select_algorithm("8,7,6,5"), Some(ChapAlgorithm::Sha3_256));
        assert_eq!(select_algorithm("99,0x6"), Some(ChapAlgorithm::Sha1));
        assert_eq!(select_algorithm("4,3"), None);
        assert_eq!(select_algorithm(""), None);
        assert!(matches!(
            TargetChap::start("1"),
            Err(ChapError::UnsupportedAlgorithm(_))
        ));
    }

    #[test]
    fn start_draws_fresh_challenges() {
        let a = TargetChap::start("5").expect("md5");
        let b = TargetChap::start("5").expect("md5");
        assert_eq!(a.algorithm(), ChapAlgorithm::Md5);
        assert_eq!(a.challenge().len(), CHALLENGE_LEN);
        assert_ne!(a.challenge(), b.challenge());
        let offer = a.offer();
        assert_eq!(offer[0], ("CHAP_A", "5".to_string()));
        assert_eq!(offer[1].1, a.id().to_string());
        assert_eq!(offer[2].1, text::encode_hex(a.challenge()));
    }

    #[test]
    fn one_way_chap() {
        let t = TargetChap::with_challenge(ChapAlgorithm::Md5, 7, vec![1, 2, 3, 4]);
        let user = creds("alice", "secretsecret1");
        let r = text::encode_hex(&ChapAlgorithm::Md5.response(7, b"secretsecret1", &[1, 2, 3, 4]));
        assert_eq!(
            t.verify(&user, None, Some("alice"), Some(&r), None, None),
            Ok(None)
        );
        // Upper-case hex works too (libiscsi sends it).
        let upper = format!("0x{}", r[2..].to_uppercase());
        assert_eq!(
            t.verify(&user, None, Some("alice"), Some(&upper), None, None),
            Ok(None)
        );
        assert_eq!(
            t.verify(&user, None, Some("bob"), Some(&r), None, None),
            Err(ChapError::WrongName("bob".into()))
        );
        let wrong = text::encode_hex(&ChapAlgorithm::Md5.response(7, b"other", &[1, 2, 3, 4]));
        assert_eq!(
            t.verify(&user, None, Some("alice"), Some(&wrong), None, None),
            Err(ChapError::WrongResponse)
        );
        assert_eq!(
            t.verify(&user, None, Some("alice"), Some("0x1234"), None, None),
            Err(ChapError::BadResponse)
        );
        assert_eq!(
            t.verify(&user, None, Some("alice"), Some("zz"), None, None),
            Err(ChapError::BadResponse)
        );
        assert_eq!(
            t.verify(&user, None, None, Some(&r), None, None),
            Err(ChapError::Missing("CHAP_N"))
        );
        assert_eq!(
            t.verify(&user, None, Some("alice"), None, None, None),
            Err(ChapError::Missing("CHAP_R"))
        );
    }

    #[test]
    fn mutual_chap() {
        let ours = vec![9u8; 16];
        let t = TargetChap::with_challenge(ChapAlgorithm::Sha256, 200, ours.clone());
        let user = creds("alice", "initiator-secret");
        let target = creds("target-user", "target-secret");
        let r = text::encode_hex(&ChapAlgorithm::Sha256.response(200, b"initiator-secret", &ours));
        let their = [0x55u8; 32];
        let answer = t
            .verify(
                &user,
                Some(&target),
                Some("alice"),
                Some(&r),
                Some("17"),
                Some(&text::encode_hex(&their)),
            )
            .expect("valid")
            .expect("mutual");
        assert_eq!(answer.name, "target-user");
        assert_eq!(
            answer.response,
            text::encode_hex(&ChapAlgorithm::Sha256.response(17, b"target-secret", &their))
        );

        // Reflection: the initiator sends our own challenge back.
        assert_eq!(
            t.verify(
                &user,
                Some(&target),
                Some("alice"),
                Some(&r),
                Some("17"),
                Some(&text::encode_hex(&ours)),
            ),
            Err(ChapError::ReflectedChallenge)
        );
        // Same secret on both sides.
        let same = creds("target-user", "initiator-secret");
        assert_eq!(
            t.verify(
                &user,
                Some(&same),
                Some("alice"),
                Some(&r),
                Some("17"),
                Some(&text::encode_hex(&their)),
            ),
            Err(ChapError::SameSecret)
        );
        // Mutual asked for, none configured.
        assert_eq!(
            t.verify(
                &user,
                None,
                Some("alice"),
                Some(&r),
                Some("17"),
                Some(&text::encode_hex(&their))
            ),
            Err(ChapError::NoMutualCredentials)
        );
        // Bad identifier and challenge.
        for (i, c, e) in [
            ("256", "0x01", ChapError::BadIdentifier),
            ("x", "0x01", ChapError::BadIdentifier),
            ("1", "nothex", ChapError::BadChallenge),
        ] {
            assert_eq!(
                t.verify(
                    &user,
                    Some(&target),
                    Some("alice"),
                    Some(&r),
                    Some(i),
                    Some(c)
                ),
                Err(e)
            );
        }
        let too_long = text::encode_hex(&[1u8; MAX_CHALLENGE_LEN + 1]);
        assert_eq!(
            t.verify(
                &user,
                Some(&target),
                Some("alice"),
                Some(&r),
                Some("1"),
                Some(&too_long)
            ),
            Err(ChapError::BadChallenge)
        );
        assert_eq!(
            t.verify(
                &user,
                Some(&target),
                Some("alice"),
                Some(&r),
                Some("1"),
                None
            ),
            Err(ChapError::Missing("CHAP_C"))
        );
    }
}
