//! The ring's handshake: each connection proves, both ways, that its ends hold the cluster cookie,
//! without sending it, before a gradient byte is accepted. HMAC-SHA256 challenge–response with a
//! fresh random nonce from each end, bound to the ring's session (the run and its generation) and
//! to both ends' ranks:
//!
//! ```text
//! initiator (rank r, connects to r + 1)           responder (rank r + 1, accepts)
//!   hello_i ‖ n_i                        ──►
//!                                        ◄──       hello_r ‖ n_r ‖ HMAC(k, "responder" ‖ t)
//!   HMAC(k, "initiator" ‖ t)             ──►
//! t = session ‖ hello_i ‖ n_i ‖ hello_r ‖ n_r,  k = the cluster cookie
//! ```
//! A peer without the cookie cannot produce either MAC; a recorded handshake replayed later fails
//! against the other end's fresh nonce (and another session's transcript).
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::tcp_wire::{Hello, Link, HELLO_BYTES};
use super::CollectiveError;

const NONCE_BYTES: usize = 32;
const MAC_BYTES: usize = 32;

/// What both ends of every ring connection must share: the cluster cookie, and the session the
/// coordinator named for this ring (run and generation).
#[derive(Clone)]
pub struct RingKey {
    secret: Vec<u8>,
    session: Vec<u8>,
}

/// Never printed: it holds the cookie.
impl std::fmt::Debug for RingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RingKey(<redacted>, session {:?})", String::from_utf8_lossy(&self.session))
    }
}

impl RingKey {
    pub fn new(secret: &[u8], session: &str) -> RingKey {
        RingKey { secret: secret.to_vec(), session: session.as_bytes().to_vec() }
    }

    /// The HMAC of one role's view of a handshake: role, session (length-prefixed), transcript.
    fn keyed(&self, role: &[u8], transcript: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("HMAC takes a key of any length");
        mac.update(role);
        mac.update(&(self.session.len() as u64).to_le_bytes());
        mac.update(&self.session);
        mac.update(transcript);
        mac
    }

    fn mac(&self, role: &[u8], transcript: &[u8]) -> [u8; MAC_BYTES] {
        self.keyed(role, transcript).finalize().into_bytes().into()
    }

    fn verify(&self, role: &[u8], transcript: &[u8], tag: &[u8]) -> bool {
        // Constant time: a peer learns nothing from how long a wrong tag took to refuse.
        self.keyed(role, transcript).verify_slice(tag).is_ok()
    }
}

/// A fresh random session name for a coordinator's run (its generations append their number), so
/// a handshake recorded in one run or generation is worthless in another.
pub fn new_session() -> String {
    let mut id = [0u8; 16];
    // Without the OS's randomness the session is still bound to the process and the time.
    if getrandom::getrandom(&mut id).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        id[..8].copy_from_slice(&(t.as_nanos() as u64).to_le_bytes());
        id[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn nonce(link: &Link) -> Result<[u8; NONCE_BYTES], CollectiveError> {
    let mut n = [0; NONCE_BYTES];
    getrandom::getrandom(&mut n).map_err(|e| link.protocol(format!("handshake: no random nonce: {e}")))?;
    Ok(n)
}

fn transcript(hello_i: &[u8], n_i: &[u8], hello_r: &[u8], n_r: &[u8]) -> Vec<u8> {
    [hello_i, n_i, hello_r, n_r].concat()
}

/// Reads a hello and checks it is rank `link.peer.rank` of `world`.
fn expect_hello(link: &mut Link, world: usize) -> Result<[u8; HELLO_BYTES], CollectiveError> {
    let mut bytes = [0; HELLO_BYTES];
    link.recv(&mut bytes)?;
    let hello = Hello::decode(&bytes).map_err(|reason| link.protocol(reason))?;
    if hello.world as usize != world || hello.rank as usize != link.peer.rank {
        return Err(link.protocol(format!(
            "handshake: the peer is rank {} of {}, expected rank {} of {world}",
            hello.rank, hello.world, link.peer.rank
        )));
    }
    Ok(bytes)
}

fn refused(link: &Link) -> CollectiveError {
    link.protocol(
        "handshake: the peer did not prove it holds the cluster cookie for this run and generation (refused)".into(),
    )
}

/// The connecting end, after its first message.
pub(super) struct Initiator {
    hello: [u8; HELLO_BYTES],
    nonce: [u8; NONCE_BYTES],
}

impl Initiator {
    /// Sends `hello ‖ n_i`: small enough to sit in the socket buffer until the peer reads it.
    pub fn start(link: &mut Link, hello: Hello) -> Result<Initiator, CollectiveError> {
        let me = Initiator { hello: hello.encode(), nonce: nonce(link)? };
        link.send(&[&me.hello[..], &me.nonce].concat())?;
        Ok(me)
    }

    /// Reads the responder's answer, checks its rank and MAC, and proves itself in turn.
    pub fn finish(self, link: &mut Link, world: usize, key: &RingKey) -> Result<(), CollectiveError> {
        let hello_r = expect_hello(link, world)?;
        let mut rest = [0; NONCE_BYTES + MAC_BYTES];
        link.recv(&mut rest)?;
        let (n_r, tag) = rest.split_at(NONCE_BYTES);
        let t = transcript(&self.hello, &self.nonce, &hello_r, n_r);
        if !key.verify(b"responder", &t, tag) {
            return Err(refused(link));
        }
        link.send(&key.mac(b"initiator", &t))
    }
}

/// The accepting end, after its answer.
pub(super) struct Responder {
    transcript: Vec<u8>,
}

impl Responder {
    /// Reads `hello_i ‖ n_i`, checks the rank, and answers with its own nonce and MAC.
    pub fn answer(link: &mut Link, hello: Hello, world: usize, key: &RingKey) -> Result<Responder, CollectiveError> {
        let hello_i = expect_hello(link, world)?;
        let mut n_i = [0; NONCE_BYTES];
        link.recv(&mut n_i)?;
        let (hello_r, n_r) = (hello.encode(), nonce(link)?);
        let t = transcript(&hello_i, &n_i, &hello_r, &n_r);
        link.send(&[&hello_r[..], &n_r, &key.mac(b"responder", &t)].concat())?;
        Ok(Responder { transcript: t })
    }

    /// Reads the initiator's MAC over the same transcript.
    pub fn finish(self, link: &mut Link, key: &RingKey) -> Result<(), CollectiveError> {
        let mut tag = [0; MAC_BYTES];
        link.recv(&mut tag)?;
        if key.verify(b"initiator", &self.transcript, &tag) {
            Ok(())
        } else {
            Err(refused(link))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mac_depends_on_the_secret_the_session_the_role_and_every_transcript_byte() {
        let key = RingKey::new(b"cluster-cookie-0123456789", "run-1/g3");
        let t = transcript(&[1; HELLO_BYTES], &[2; 32], &[3; HELLO_BYTES], &[4; 32]);
        let tag = key.mac(b"responder", &t);
        assert!(key.verify(b"responder", &t, &tag));
        assert!(!key.verify(b"initiator", &t, &tag), "a responder's tag is no initiator's");
        assert!(!RingKey::new(b"cluster-cookie-0123456789", "run-1/g4").verify(b"responder", &t, &tag));
        assert!(!RingKey::new(b"another-cookie-0123456789", "run-1/g3").verify(b"responder", &t, &tag));
        let mut other = t.clone();
        other[HELLO_BYTES + 5] ^= 1;
        assert!(!key.verify(b"responder", &other, &tag), "another nonce, another tag");
        assert!(!format!("{key:?}").contains("cluster-cookie"), "the secret is never printed");
    }
}
