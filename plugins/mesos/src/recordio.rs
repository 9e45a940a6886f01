//! RecordIO, the framing of Mesos' event stream: `<length>\n<length bytes>` repeated.

use keepwarm_plugin_sdk::FactoryError;

/// Collects stream bytes and yields whole records.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete record, if one has arrived; an error if the framing is broken.
    pub fn next_record(&mut self) -> Result<Option<Vec<u8>>, FactoryError> {
        let Some(newline) = self.buf.iter().position(|&b| b == b'\n') else {
            if self.buf.len() > 20 {
                return Err(broken(&self.buf));
            }
            return Ok(None);
        };
        let length = std::str::from_utf8(&self.buf[..newline])
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .ok_or_else(|| broken(&self.buf))?;
        let end = newline + 1 + length;
        if self.buf.len() < end {
            return Ok(None);
        }
        let record = self.buf[newline + 1..end].to_vec();
        self.buf.drain(..end);
        Ok(Some(record))
    }
}

fn broken(buf: &[u8]) -> FactoryError {
    let head = String::from_utf8_lossy(&buf[..buf.len().min(40)]).into_owned();
    FactoryError::Engine(format!(
        "the master's event stream is not RecordIO (expected `<length>\\n`): {head:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_records_across_arbitrary_chunks() {
        let stream = b"5\nhello11\n{\"a\":\"b c\"}3\nxyz";
        for chunk in 1..stream.len() {
            let mut d = Decoder::default();
            let mut out = Vec::new();
            for piece in stream.chunks(chunk) {
                d.feed(piece);
                while let Some(r) = d.next_record().unwrap() {
                    out.push(String::from_utf8(r).unwrap());
                }
            }
            assert_eq!(out, ["hello", "{\"a\":\"b c\"}", "xyz"], "chunk {chunk}");
        }
    }

    #[test]
    fn rejects_a_stream_that_is_not_recordio() {
        let mut d = Decoder::default();
        d.feed(b"HTTP/1.1 500\n");
        assert!(d.next_record().is_err());
        let mut d = Decoder::default();
        d.feed(b"{\"type\":\"SUBSCRIBED\",\"x\":1}");
        assert!(d.next_record().is_err());
    }
}
