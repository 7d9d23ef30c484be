//! The chunked transfer coding (RFC 9112 §7.1), decoded strictly and
//! re-encoded, so an endpoint or a client only ever sees our own framing.
//!
//! The decoder is sans-IO: it is fed whatever bytes arrived and says how
//! many it consumed and which of them are body data. It refuses what
//! request smuggling feeds on: sizes that are not plain hex (`0x`, signs,
//! overflow), bare LF or CR, data not followed by CRLF, and extensions or
//! trailers past their limits. Extensions are dropped; trailers are kept
//! (bounded) for the caller to pass on or not.

use std::ops::Range;

/// The longest chunk-size line (size, extensions and all) accepted.
const MAX_SIZE_LINE: usize = 4096;

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ChunkError {
    /// The chunk size is not hex, or does not fit in 64 bits.
    #[error("invalid chunk size")]
    Size,
    /// A line did not end in CRLF.
    #[error("chunk framing without CRLF")]
    LineEnding,
    /// A chunk-size line (with its extensions) is too long.
    #[error("chunk extensions too long")]
    Extensions,
    /// The trailer section is malformed or too large.
    #[error("invalid or oversized trailers")]
    Trailers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits; `digits` counts them.
    Size {
        digits: u8,
    },
    /// Past the digits: optional whitespace, then `;` or CR.
    AfterSize,
    /// Inside chunk extensions, until CR.
    Extension,
    /// After the CR of a size line.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// After the data: CR, then LF.
    DataCr,
    DataLf,
    /// At the start of a trailer line (an empty line ends the body).
    TrailerLineStart,
    /// Inside a trailer line.
    TrailerLine,
    /// After the CR of a trailer line.
    TrailerLf,
    /// After the CR of the final empty line.
    FinalLf,
    Done,
}

/// What one call to [`ChunkedDecoder::decode`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decoded {
    /// How many input bytes were consumed (framing and data).
    pub(crate) consumed: usize,
    /// The body data among them, as a range of the input.
    pub(crate) data: Option<Range<usize>>,
}

/// Decodes one chunked body; see the module docs.
#[derive(Debug)]
pub(crate) struct ChunkedDecoder {
    state: State,
    /// Bytes of the current chunk still to come, or the size being read.
    remaining: u64,
    /// Length of the current size line so far.
    line: usize,
    /// The raw trailer section (each line with its CRLF), when there is one.
    trailers: Vec<u8>,
    max_trailer_bytes: usize,
}

impl ChunkedDecoder {
    /// A decoder that accepts at most `max_trailer_bytes` of trailers.
    pub(crate) fn new(max_trailer_bytes: usize) -> Self {
        ChunkedDecoder {
            state: State::Size { digits: 0 },
            remaining: 0,
            line: 0,
            trailers: Vec::new(),
            max_trailer_bytes,
        }
    }

    /// Whether the last chunk and the trailer section were read.
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The raw trailer section (lines with CRLF, no final empty line); empty when none came.
    pub(crate) fn trailers(&self) -> &[u8] {
        &self.trailers
    }

    /// Consumes framing from `input` up to and including the next run of
    /// data; stops after that data, at the end of the input, or when done.
    pub(crate) fn decode(&mut self, input: &[u8]) -> Result<Decoded, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let byte = input[i];
            match self.state {
                State::Size { digits } => match hex_value(byte) {
                    Some(v) => {
                        if self.remaining >> 60 != 0 {
                            return Err(ChunkError::Size);
                        }
                        self.remaining = self.remaining << 4 | u64::from(v);
                        self.state = State::Size { digits: digits.saturating_add(1) };
                    }
                    None if digits == 0 => return Err(ChunkError::Size),
                    None => {
                        self.state = State::AfterSize;
                        continue;
                    }
                },
                State::AfterSize => match byte {
                    b' ' | b'\t' => {}
                    b';' => self.state = State::Extension,
                    b'\r' => self.state = State::SizeLf,
                    _ => return Err(ChunkError::Size),
                },
                State::Extension => match byte {
                    b'\r' => self.state = State::SizeLf,
                    b'\t' | b' '..=b'~' | 0x80..=0xff => {}
                    _ => return Err(ChunkError::Extensions),
                },
                State::SizeLf => {
                    if byte != b'\n' {
                        return Err(ChunkError::LineEnding);
                    }
                    self.line = 0;
                    self.state = if self.remaining == 0 { State::TrailerLineStart } else { State::Data };
                    i += 1;
                    if self.state == State::Data {
                        // Hand back the data that follows at once.
                        return Ok(self.take_data(input, i));
                    }
                    continue;
                }
                State::Data => return Ok(self.take_data(input, i)),
                State::DataCr => {
                    if byte != b'\r' {
                        return Err(ChunkError::LineEnding);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if byte != b'\n' {
                        return Err(ChunkError::LineEnding);
                    }
                    self.state = State::Size { digits: 0 };
                }
                State::TrailerLineStart => match byte {
                    b'\r' => self.state = State::FinalLf,
                    _ => {
                        self.state = State::TrailerLine;
                        continue;
                    }
                },
                State::TrailerLine => {
                    self.keep_trailer_byte(byte)?;
                    if byte == b'\r' {
                        self.state = State::TrailerLf;
                    } else if byte == b'\n' {
                        return Err(ChunkError::LineEnding);
                    }
                }
                State::TrailerLf => {
                    if byte != b'\n' {
                        return Err(ChunkError::LineEnding);
                    }
                    self.keep_trailer_byte(byte)?;
                    self.state = State::TrailerLineStart;
                }
                State::FinalLf => {
                    if byte != b'\n' {
                        return Err(ChunkError::LineEnding);
                    }
                    self.state = State::Done;
                    self.check_trailers()?;
                    return Ok(Decoded { consumed: i + 1, data: None });
                }
                State::Done => return Ok(Decoded { consumed: i, data: None }),
            }
            if matches!(self.state, State::Size { .. } | State::AfterSize | State::Extension) {
                self.line += 1;
                if self.line > MAX_SIZE_LINE {
                    return Err(ChunkError::Extensions);
                }
            }
            i += 1;
        }
        Ok(Decoded { consumed: i, data: None })
    }

    /// Takes the data of the current chunk available from `input[at..]`.
    fn take_data(&mut self, input: &[u8], at: usize) -> Decoded {
        let available = (input.len() - at) as u64;
        let n = available.min(self.remaining) as usize;
        self.remaining -= n as u64;
        if self.remaining == 0 {
            self.state = State::DataCr;
        }
        Decoded { consumed: at + n, data: (n > 0).then_some(at..at + n) }
    }

    fn keep_trailer_byte(&mut self, byte: u8) -> Result<(), ChunkError> {
        if self.trailers.len() >= self.max_trailer_bytes {
            return Err(ChunkError::Trailers);
        }
        self.trailers.push(byte);
        Ok(())
    }

    /// The trailer section must be well-formed header fields.
    fn check_trailers(&self) -> Result<(), ChunkError> {
        if self.trailers.is_empty() {
            return Ok(());
        }
        let mut block = Vec::with_capacity(self.trailers.len() + 2);
        block.extend_from_slice(&self.trailers);
        block.extend_from_slice(b"\r\n");
        let mut fields = [httparse::EMPTY_HEADER; 32];
        match httparse::parse_headers(&block, &mut fields) {
            Ok(httparse::Status::Complete(_)) => Ok(()),
            _ => Err(ChunkError::Trailers),
        }
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// The size line of a chunk of `len` bytes (`{len:x}\r\n`), written into `out`.
pub(crate) fn size_line(len: usize, out: &mut [u8; 18]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut n = len;
    let mut count = 0;
    loop {
        digits[15 - count] = DIGITS[n & 15];
        count += 1;
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out[..count].copy_from_slice(&digits[16 - count..]);
    out[count] = b'\r';
    out[count + 1] = b'\n';
    &out[..count + 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes; the body, or the error.
    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>, usize), ChunkError> {
        let mut decoder = ChunkedDecoder::new(1024);
        let mut body = Vec::new();
        let mut pos = 0;
        let mut fed = 0;
        while !decoder.is_done() && pos < input.len() {
            fed = (fed + step).min(input.len()).max(pos + 1);
            let decoded = decoder.decode(&input[pos..fed])?;
            if let Some(range) = decoded.data {
                body.extend_from_slice(&input[pos..fed][range]);
            }
            pos += decoded.consumed;
            if decoded.consumed == 0 && fed == input.len() {
                break;
            }
        }
        assert!(decoder.is_done(), "incomplete: {:?}", String::from_utf8_lossy(input));
        Ok((body, decoder.trailers().to_vec(), pos))
    }

    #[test]
    fn bodies_decode_whatever_the_read_sizes() {
        let input = b"5\r\nhello\r\n1;name=value\r\n \r\n0\r\n\r\nNEXT";
        for step in 1..input.len() {
            let (body, trailers, used) = decode_all(input, step).unwrap();
            assert_eq!(body, b"hello ");
            assert!(trailers.is_empty());
            assert_eq!(used, input.len() - 4, "stops before the next message");
        }
    }

    #[test]
    fn trailers_are_kept_raw() {
        let input = b"2\r\nok\r\n0\r\nGrpc-Status: 0\r\nX-A: b\r\n\r\n";
        let (body, trailers, _) = decode_all(input, 64).unwrap();
        assert_eq!(body, b"ok");
        assert_eq!(trailers, b"Grpc-Status: 0\r\nX-A: b\r\n");
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        for (bad, why) in [
            (&b"0x5\r\nhello\r\n0\r\n\r\n"[..], ChunkError::Size),
            (b"+5\r\nhello\r\n0\r\n\r\n", ChunkError::Size),
            (b"-5\r\nhello\r\n0\r\n\r\n", ChunkError::Size),
            (b"\r\nhello\r\n0\r\n\r\n", ChunkError::Size),
            (b"10000000000000000\r\n", ChunkError::Size),
            (b"5\nhello\r\n0\r\n\r\n", ChunkError::Size),
            (b"5\r\nhello\n0\r\n\r\n", ChunkError::LineEnding),
            (b"5\r\nhelloXX0\r\n\r\n", ChunkError::LineEnding),
            (b"5\rhello\r\n0\r\n\r\n", ChunkError::LineEnding),
            (b"5;a\0b\r\nhello\r\n0\r\n\r\n", ChunkError::Extensions),
            (b"0\r\nX: a\nY: b\r\n\r\n", ChunkError::LineEnding),
            (b"0\r\nbad trailer\r\n\r\n", ChunkError::Trailers),
            (b"0\r\n\r\r", ChunkError::LineEnding),
        ] {
            assert_eq!(decode_all(bad, 64).unwrap_err(), why, "{:?}", String::from_utf8_lossy(bad));
        }
        let mut long = b"1;".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_SIZE_LINE));
        long.extend_from_slice(b"\r\na\r\n0\r\n\r\n");
        assert_eq!(decode_all(&long, 512).unwrap_err(), ChunkError::Extensions);
        let mut big = b"0\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'y', 2000));
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(decode_all(&big, 512).unwrap_err(), ChunkError::Trailers);
    }

    #[test]
    fn the_largest_size_fits_and_one_more_digit_does_not() {
        let mut decoder = ChunkedDecoder::new(0);
        assert!(decoder.decode(b"ffffffffffffffff\r\n").is_ok());
        let mut decoder = ChunkedDecoder::new(0);
        assert_eq!(decoder.decode(b"0ffffffffffffffff0\r\n").unwrap_err(), ChunkError::Size);
    }

    #[test]
    fn size_lines_are_lower_hex() {
        let mut out = [0; 18];
        assert_eq!(size_line(0, &mut out), b"0\r\n");
        assert_eq!(size_line(255, &mut out), b"ff\r\n");
        assert_eq!(size_line(usize::MAX, &mut out), b"ffffffffffffffff\r\n");
    }
}
