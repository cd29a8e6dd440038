//! Reading structured choices (modes, lengths, split points) off the front of a fuzz input.
//! Past the end every read returns zeros, so any input is a valid sequence of choices.

pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.array())
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.array())
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// `N` bytes, zero-padded at the end of the input.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let head = self.bytes(N);
        out[..head.len()].copy_from_slice(head);
        out
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Splits `data` into pieces whose sizes come from `sizes` (each 0..=`max`), cycling through
/// it; with no sizes, one piece. Empty pieces are kept: feeding nothing must be harmless.
pub fn pieces<'d>(data: &'d [u8], sizes: &[u8], scale: usize) -> Vec<&'d [u8]> {
    if sizes.is_empty() {
        return vec![data];
    }
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = (usize::from(sizes[i % sizes.len()]) * scale).min(rest.len());
        let (piece, tail) = rest.split_at(n);
        out.push(piece);
        rest = tail;
        i += 1;
        if i > 4 * data.len() + 16 {
            // Only zero sizes: the rest in one piece.
            out.push(rest);
            break;
        }
    }
    out
}

/// `data` repeated until it is `len` bytes long (zeros if `data` is empty): long messages from
/// short inputs, so multi-chunk paths are reached without huge corpus files.
pub fn stretch(data: &[u8], len: usize) -> Vec<u8> {
    if data.is_empty() {
        return vec![0; len];
    }
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&data[..data.len().min(len)]);
    // Doubling: `out` is whole repetitions of `data` until the last copy, which is cut.
    while out.len() < len {
        let take = out.len().min(len - out.len());
        out.extend_from_within(..take);
    }
    out
}
