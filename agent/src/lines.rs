//! Cutting a file's bytes into lines, whatever size the reads come in: pure, no I/O.
//!
//! A line is bounded: one longer than `max` bytes is cut into pieces of at most `max` bytes (at
//! a UTF-8 character boundary when there is one), each marked `force_start` so the grouper gives
//! every piece an event of its own. Pieces are cut at the same offsets whether the line arrives
//! in one read or a byte at a time, so grouping never depends on read sizes (property-tested
//! below), and a runaway line without a newline cannot hold more than `max` bytes.

use crate::multiline::Line;

/// Smallest line bound: a piece must be able to hold one UTF-8 character.
const MIN_MAX: usize = 4;

/// How many lines a push completed and how many over-long lines it began to cut.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub lines: u64,
    pub splits: u64,
}

/// The line cutter of one file.
#[derive(Debug)]
pub struct LineSplitter {
    max: usize,
    /// Bytes of the line not yet complete; they end where the last push ended.
    buf: Vec<u8>,
    /// The line being read was longer than the bound: its remaining pieces are forced events.
    in_long_line: bool,
}

impl LineSplitter {
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(MIN_MAX),
            buf: Vec::new(),
            in_long_line: false,
        }
    }

    /// Bytes held for a line whose newline has not come yet.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Cuts `data`, read from the file at `offset` (right after the previous push), into lines.
    pub fn push(&mut self, data: &[u8], offset: u64, emit: &mut impl FnMut(Line<'_>)) -> Counts {
        let mut counts = Counts::default();
        if self.buf.is_empty() {
            // Most reads start on a line boundary: cut straight from the read, copy only the tail.
            let used = cut(
                data,
                offset,
                self.max,
                &mut self.in_long_line,
                emit,
                &mut counts,
            );
            self.buf.extend_from_slice(&data[used..]);
        } else {
            let base = offset - self.buf.len() as u64;
            self.buf.extend_from_slice(data);
            let used = cut(
                &self.buf,
                base,
                self.max,
                &mut self.in_long_line,
                emit,
                &mut counts,
            );
            self.buf.drain(..used);
        }
        counts
    }

    /// The file ends at `end` and will not grow: its last line, unterminated, is emitted as is.
    pub fn finish(&mut self, end: u64, emit: &mut impl FnMut(Line<'_>)) -> Counts {
        if self.buf.is_empty() {
            return Counts::default();
        }
        emit(Line {
            bytes: &self.buf,
            start: end - self.buf.len() as u64,
            end,
            force_start: self.in_long_line,
        });
        self.buf.clear();
        self.in_long_line = false;
        Counts {
            lines: 1,
            splits: 0,
        }
    }
}

/// Emits the complete lines of `chunk` (at file offset `base`) and the pieces of an over-long
/// incomplete one; returns how many bytes it used (the rest waits for more data).
fn cut(
    chunk: &[u8],
    base: u64,
    max: usize,
    in_long_line: &mut bool,
    emit: &mut impl FnMut(Line<'_>),
    counts: &mut Counts,
) -> usize {
    let mut start = 0usize;
    while let Some(i) = memchr::memchr(b'\n', &chunk[start..]) {
        let text_end = start + i;
        let s = pieces(
            chunk,
            base,
            start,
            text_end,
            max,
            in_long_line,
            emit,
            counts,
        );
        emit(Line {
            bytes: &chunk[s..text_end],
            start: base + s as u64,
            end: base + text_end as u64 + 1,
            force_start: *in_long_line,
        });
        *in_long_line = false;
        counts.lines += 1;
        start = text_end + 1;
    }
    // No newline yet, but already over the bound: ship the pieces we have.
    pieces(
        chunk,
        base,
        start,
        chunk.len(),
        max,
        in_long_line,
        emit,
        counts,
    )
}

/// Emits `max`-byte pieces of `chunk[s..text_end]` while more than `max` bytes remain; returns
/// where the remainder starts.
#[allow(clippy::too_many_arguments)]
fn pieces(
    chunk: &[u8],
    base: u64,
    mut s: usize,
    text_end: usize,
    max: usize,
    in_long_line: &mut bool,
    emit: &mut impl FnMut(Line<'_>),
    counts: &mut Counts,
) -> usize {
    while text_end - s > max {
        let piece = utf8_cut(&chunk[s..text_end], max);
        if !*in_long_line {
            counts.splits += 1;
            *in_long_line = true;
        }
        emit(Line {
            bytes: &chunk[s..s + piece],
            start: base + s as u64,
            end: base + (s + piece) as u64,
            force_start: true,
        });
        s += piece;
    }
    s
}

/// Where to cut `data` at most `max` bytes in, backing off to a UTF-8 character boundary so a
/// character is not split between two events (unless the data is not UTF-8 at all).
fn utf8_cut(data: &[u8], max: usize) -> usize {
    let max = max.min(data.len());
    for back in 0..4.min(max) {
        let i = max - back;
        if i == data.len() || (data[i] & 0xC0) != 0x80 {
            return i;
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::multiline::{GroupedEvent, Grouper};
    use proptest::prelude::*;
    use std::time::Instant;

    #[test]
    fn utf8_cut_backs_off_to_a_boundary() {
        let s = "aé€".as_bytes(); // 1 + 2 + 3 bytes
        assert_eq!(utf8_cut(s, 2), 1);
        assert_eq!(utf8_cut(s, 3), 3);
        assert_eq!(utf8_cut(s, 4), 3);
        assert_eq!(utf8_cut(s, 10), 6);
        assert_eq!(utf8_cut(&[0x80, 0x80, 0x80, 0x80, 0x80], 4), 4);
    }

    #[test]
    fn long_line_pieces_and_counts() {
        let mut sp = LineSplitter::new(4);
        let mut got = Vec::new();
        let c = sp.push(b"abcdefghij\nxy", 100, &mut |l: Line<'_>| {
            got.push((l.bytes.to_vec(), l.start, l.end, l.force_start))
        });
        assert_eq!(
            c,
            Counts {
                lines: 1,
                splits: 1
            }
        );
        assert_eq!(
            got,
            vec![
                (b"abcd".to_vec(), 100, 104, true),
                (b"efgh".to_vec(), 104, 108, true),
                (b"ij".to_vec(), 108, 111, true),
            ]
        );
        assert_eq!(sp.buffered(), 2);
        got.clear();
        let c = sp.finish(113, &mut |l: Line<'_>| {
            got.push((l.bytes.to_vec(), l.start, l.end, l.force_start))
        });
        assert_eq!(c.lines, 1);
        assert_eq!(got, vec![(b"xy".to_vec(), 111, 113, false)]);
    }

    /// Splits `data` into reads of the given sizes (cycled), groups the lines, flushes at the
    /// end as a released file does.
    fn group_in_reads(data: &[u8], reads: &[usize], max_line: usize) -> Vec<GroupedEvent> {
        let now = Instant::now();
        let mut sp = LineSplitter::new(max_line);
        let mut g = Grouper::new(crate::multiline::tests::cfg_bounded(6, 96));
        let mut out = Vec::new();
        let mut pos = 0usize;
        let mut sizes = reads.iter().cycle();
        let mut emit = |l: Line<'_>| out.extend(g.push(l, now));
        while pos < data.len() {
            let n = sizes.next().copied().unwrap_or(data.len()).max(1);
            let end = (pos + n).min(data.len());
            sp.push(&data[pos..end], pos as u64, &mut emit);
            pos = end;
        }
        sp.finish(data.len() as u64, &mut emit);
        out.extend(g.flush());
        out
    }

    /// Lines a Flink log really has: records, stack-trace lines, blank lines, multi-byte text,
    /// CRLF, over-long lines and an unterminated last line.
    fn log_text() -> impl Strategy<Value = Vec<u8>> {
        let line = prop_oneof![
            4 => "[a-zé€ ]{0,30}".prop_map(|m| format!("2026-11-22 19:03:04,123 INFO  x - {m}\n")),
            3 => "[A-Za-z.]{1,20}".prop_map(|m| format!("\tat {m}(X.java:1)\n")),
            1 => Just("Caused by: java.lang.Exception: boom\n".to_string()),
            1 => Just("\n".to_string()),
            1 => Just("\r\n".to_string()),
            1 => "[a-zé€💥]{40,200}".prop_map(|m| format!("{m}\n")),
        ];
        (proptest::collection::vec(line, 0..40), "[a-z€]{0,60}").prop_map(|(lines, tail)| {
            let mut s = lines.concat();
            s.push_str(&tail);
            s.into_bytes()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Grouping does not depend on how the file is split into reads, and the events cover
        /// every byte of the file exactly once, in order.
        #[test]
        fn grouping_is_independent_of_read_sizes(
            data in log_text(),
            reads in proptest::collection::vec(1usize..64, 1..16),
            max_line in 4usize..48,
        ) {
            let whole = group_in_reads(&data, &[data.len().max(1)], max_line);
            let split = group_in_reads(&data, &reads, max_line);
            prop_assert_eq!(&whole, &split);
            let mut at = 0u64;
            for ev in &whole {
                prop_assert_eq!(ev.start, at);
                prop_assert!(ev.end > ev.start);
                at = ev.end;
            }
            prop_assert_eq!(at, data.len() as u64);
        }
    }
}
