//! W3C Trace Context (`traceparent`, www.w3.org/TR/trace-context/ §3.2): the gateway accepts a
//! client's trace or starts one, records its trace id in the audit event and the logs, and
//! passes a child to the components it calls, so one request is one trace across components.

use std::fmt;

/// Request header carrying the trace context.
pub const HEADER: &str = "traceparent";

/// A parsed `traceparent` of version `00`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    /// The id of the span that made this request (the caller's).
    pub parent_id: [u8; 8],
    pub flags: u8,
}

/// Bit 0 of the flags: the caller may have recorded its span.
pub const SAMPLED: u8 = 0x01;

impl TraceParent {
    /// Parses a `traceparent` value, `None` for any the spec says to ignore (§3.2.2–3.2.4): a
    /// version other than two lowercase hex digits or `ff`, a version `00` value of any length
    /// but 55, an id not in lowercase hex or all zeros. A future version is read by its first
    /// four fields when a `-` follows them.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim_matches([' ', '\t']);
        let bytes = value.as_bytes();
        let version = hex_exact::<1>(value.get(0..2)?)?[0];
        if version == 0xff || bytes.get(2) != Some(&b'-') {
            return None;
        }
        match (version, bytes.len()) {
            (0, 55) => {}
            (0, _) => return None,
            (_, 55) => {}
            (_, n) if n > 55 && bytes[55] == b'-' => {}
            _ => return None,
        }
        if bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let trace_id = hex_exact::<16>(value.get(3..35)?)?;
        let parent_id = hex_exact::<8>(value.get(36..52)?)?;
        let flags = hex_exact::<1>(value.get(53..55)?)?[0];
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self { trace_id, parent_id, flags })
    }

    /// A new trace, started here (no usable `traceparent` came in), not sampled.
    pub fn start(rng: &mut impl rand_core::RngCore) -> Self {
        Self { trace_id: nonzero(rng), parent_id: nonzero(rng), flags: 0 }
    }

    /// The context to send on a call made within this one: the same trace and flags, under a
    /// new parent id (the span of this component's part of the request).
    pub fn child(&self, rng: &mut impl rand_core::RngCore) -> Self {
        Self { parent_id: nonzero(rng), ..*self }
    }

    /// The trace id as 32 lowercase hex digits, as logs and audit events record it.
    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-{}-{:02x}", hex::encode(self.trace_id), hex::encode(self.parent_id), self.flags)
    }
}

fn hex_exact<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut out = [0; N];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

fn nonzero<const N: usize>(rng: &mut impl rand_core::RngCore) -> [u8; N] {
    let mut id = [0; N];
    while id == [0; N] {
        rng.fill_bytes(&mut id);
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_the_specs_example_and_writes_it_back() {
        let parsed = TraceParent::parse(EXAMPLE).expect("the spec's example");
        assert_eq!(parsed.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.flags & SAMPLED, SAMPLED);
        assert_eq!(parsed.to_string(), EXAMPLE);
    }

    #[test]
    fn ignores_what_the_spec_says_to_ignore() {
        for bad in [
            "",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn reads_a_future_version_by_its_first_four_fields() {
        let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
        let parsed = TraceParent::parse(future).expect("a future version");
        assert_eq!(parsed.to_string(), EXAMPLE, "sent on as version 00");
    }

    #[test]
    fn a_child_keeps_the_trace_and_flags_and_takes_a_new_parent() {
        let mut rng = rand_core::OsRng;
        let parent = TraceParent::parse(EXAMPLE).expect("example");
        let child = parent.child(&mut rng);
        assert_eq!((child.trace_id, child.flags), (parent.trace_id, parent.flags));
        assert_ne!(child.parent_id, parent.parent_id);
        let started = TraceParent::start(&mut rng);
        assert_eq!(TraceParent::parse(&started.to_string()), Some(started));
        assert_eq!(started.flags, 0);
    }
}
