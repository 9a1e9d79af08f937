//! The protoheader: the 2-byte length of the JSON header, big-endian, read and written
//! through [`byteorder::BigEndian`] as the design names it.

use byteorder::{BigEndian, ByteOrder as _};

/// Length of the protoheader in bytes.
pub(crate) const LEN: usize = 2;

/// The header length a protoheader announces.
#[inline]
pub(crate) fn read(ph: &[u8; LEN]) -> u16 {
    BigEndian::read_u16(ph)
}

/// Writes the protoheader announcing `header_len`.
#[inline]
pub(crate) fn write(ph: &mut [u8; LEN], header_len: u16) {
    BigEndian::write_u16(ph, header_len);
}

#[cfg(test)]
mod tests {
    #[test]
    fn big_endian_both_ways() {
        assert_eq!(super::read(&[0x00, 0x67]), 103);
        assert_eq!(super::read(&[0x12, 0x34]), 0x1234);
        let mut ph = [0; 2];
        super::write(&mut ph, 0x7f01);
        assert_eq!(ph, [0x7f, 0x01]);
    }
}
