//! The PIN: generated from a CSPRNG, digits only, zeroized on drop, redacted in `Debug`.
//! It is never stored and never logged; it travels only inside JWEs and the PIN mail.

use rand::Rng;
use zeroize::{Zeroize, ZeroizeOnDrop};

pub const MIN_LEN: usize = 4;
pub const MAX_LEN: usize = 63;
/// PIN length used when the create request gives none.
pub const DEFAULT_LEN: usize = 8;

#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct Pin(String);

impl Pin {
    /// A fresh PIN of `len` digits from the OS CSPRNG. `len` must be within 4..=63.
    pub fn generate(len: usize) -> Self {
        let len = len.clamp(MIN_LEN, MAX_LEN);
        // ThreadRng is a CSPRNG (ChaCha12) seeded and periodically reseeded from the OS.
        let mut rng = rand::rng();
        let mut s = String::with_capacity(len);
        for _ in 0..len {
            let d: u8 = rng.random_range(0..10);
            s.push(char::from(b'0' + d));
        }
        Pin(s)
    }

    /// Wraps a PIN received from Yubico (digits only, 4..=63), or `None`.
    pub fn from_digits(s: &str) -> Option<Self> {
        let ok = (MIN_LEN..=MAX_LEN).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
        ok.then(|| Pin(s.to_string()))
    }

    /// The digits, for the one place that must put them on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pin(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pins_are_digits_of_the_asked_length() {
        for len in [4, 8, 63] {
            let p = Pin::generate(len);
            assert_eq!(p.expose().len(), len);
            assert!(p.expose().bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn pins_differ_and_never_show_in_debug() {
        let a = Pin::generate(16);
        let b = Pin::generate(16);
        assert_ne!(a, b);
        assert_eq!(format!("{a:?}"), "Pin(***)");
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn from_digits_rejects_non_digits_and_bad_lengths() {
        assert!(Pin::from_digits("1234").is_some());
        assert!(Pin::from_digits("123").is_none());
        assert!(Pin::from_digits("12a4").is_none());
        assert!(Pin::from_digits(&"1".repeat(64)).is_none());
    }
}
