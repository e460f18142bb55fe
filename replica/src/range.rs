//! Parsing of single-range `Range: bytes=...` headers.

/// What to send for a request, given its `Range` header and the object size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// The whole object (no header, a header we ignore, or several ranges).
    Full,
    /// Bytes `start..=end` (inclusive, `end < size`).
    Partial { start: u64, end: u64 },
    /// A syntactically valid range that selects nothing: `416`.
    Unsatisfiable,
}

impl RangeSpec {
    /// Number of bytes selected, for a `Partial` range.
    pub fn selected_len(&self) -> Option<u64> {
        match self {
            RangeSpec::Partial { start, end } => Some(end - start + 1),
            _ => None,
        }
    }
}

/// Interprets a `Range` header for an object of `size` bytes.
///
/// Supports `bytes=a-b`, `bytes=a-` and `bytes=-n`. A header that is not a byte range or is
/// malformed is ignored (full body), as RFC 9110 allows; so is a multi-range request.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeSpec {
    let Some(h) = header else {
        return RangeSpec::Full;
    };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return RangeSpec::Full;
    };
    let spec = spec.trim();
    if spec.contains(',') {
        return RangeSpec::Full;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeSpec::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    if a.is_empty() {
        // Suffix range: the last n bytes.
        let Some(n) = num(b) else {
            return RangeSpec::Full;
        };
        if n == 0 || size == 0 {
            return RangeSpec::Unsatisfiable;
        }
        return RangeSpec::Partial {
            start: size - n.min(size),
            end: size - 1,
        };
    }
    let Some(start) = num(a) else {
        return RangeSpec::Full;
    };
    let end = if b.is_empty() {
        None
    } else {
        match num(b) {
            Some(e) if e >= start => Some(e),
            _ => return RangeSpec::Full,
        }
    };
    if start >= size {
        return RangeSpec::Unsatisfiable;
    }
    let last = size - 1;
    RangeSpec::Partial {
        start,
        end: end.map_or(last, |e| e.min(last)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeSpec::*;

    #[test]
    fn range_table() {
        let cases: &[(Option<&str>, u64, RangeSpec)] = &[
            (None, 100, Full),
            (Some("bytes=0-9"), 100, Partial { start: 0, end: 9 }),
            (Some("bytes=10-"), 100, Partial { start: 10, end: 99 }),
            (Some("bytes=-10"), 100, Partial { start: 90, end: 99 }),
            (Some("bytes=-1000"), 100, Partial { start: 0, end: 99 }),
            (Some("bytes=90-200"), 100, Partial { start: 90, end: 99 }),
            (Some("bytes=99-99"), 100, Partial { start: 99, end: 99 }),
            (Some(" bytes= 5 - 6 "), 100, Partial { start: 5, end: 6 }),
            (Some("bytes=100-"), 100, Unsatisfiable),
            (Some("bytes=100-200"), 100, Unsatisfiable),
            (Some("bytes=-0"), 100, Unsatisfiable),
            (Some("bytes=0-"), 0, Unsatisfiable),
            (Some("bytes=-5"), 0, Unsatisfiable),
            (Some("bytes=0-1,5-6"), 100, Full),
            (Some("bytes=9-3"), 100, Full),
            (Some("bytes=a-b"), 100, Full),
            (Some("bytes=-"), 100, Full),
            (Some("bytes=+1-2"), 100, Full),
            (Some("items=0-9"), 100, Full),
            (Some("bytes=5"), 100, Full),
        ];
        for (h, size, want) in cases {
            assert_eq!(parse_range(*h, *size), *want, "{h:?} size {size}");
        }
    }

    #[test]
    fn partial_len() {
        assert_eq!(Partial { start: 3, end: 3 }.selected_len(), Some(1));
        assert_eq!(Full.selected_len(), None);
    }
}
