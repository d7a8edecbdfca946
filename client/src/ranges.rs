//! Splitting a byte range of a file into per-chunk pieces. Pure arithmetic, no I/O.

/// One piece of a file range that lies inside a single chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Chunk index within the file (`file_offset / chunk_size`).
    pub index: u64,
    /// Offset of the piece inside its chunk.
    pub offset_in_chunk: u64,
    /// Offset of the piece from the start of the whole range (into the caller's buffer).
    pub buf_offset: u64,
    /// Length of the piece in bytes (never 0).
    pub len: u64,
}

/// Splits `[offset, offset + len)` at chunk boundaries. `chunk_size` must be non-zero.
/// An empty range gives no pieces.
pub fn split(offset: u64, len: u64, chunk_size: u64) -> Vec<Piece> {
    let mut pieces = Vec::new();
    // A zero chunk size is refused at connect; never loop on it.
    if chunk_size == 0 {
        return pieces;
    }
    let end = offset.saturating_add(len);
    let mut pos = offset;
    while pos < end {
        let index = pos / chunk_size;
        let offset_in_chunk = pos % chunk_size;
        let piece_len = (chunk_size - offset_in_chunk).min(end - pos);
        pieces.push(Piece {
            index,
            offset_in_chunk,
            buf_offset: pos - offset,
            len: piece_len,
        });
        pos += piece_len;
    }
    debug_assert_eq!(pieces.iter().map(|p| p.len).sum::<u64>(), end - offset);
    pieces
}

/// Length of the next sequential piece starting at `pos`: at most `max`, never crossing a
/// chunk boundary, so each piece is one data-plane request.
pub fn next_piece_len(pos: u64, max: u64, chunk_size: u64) -> u64 {
    if chunk_size == 0 {
        return max;
    }
    (chunk_size - pos % chunk_size).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CS: u64 = 64 << 10;

    #[test]
    fn a_range_inside_one_chunk_is_one_piece() {
        assert_eq!(
            split(10, 100, CS),
            vec![Piece {
                index: 0,
                offset_in_chunk: 10,
                buf_offset: 0,
                len: 100
            }]
        );
    }

    #[test]
    fn a_range_ending_exactly_at_a_boundary_does_not_spill() {
        assert_eq!(
            split(0, CS, CS),
            vec![Piece {
                index: 0,
                offset_in_chunk: 0,
                buf_offset: 0,
                len: CS
            }]
        );
        assert_eq!(
            split(CS - 1, 1, CS),
            vec![Piece {
                index: 0,
                offset_in_chunk: CS - 1,
                buf_offset: 0,
                len: 1
            }]
        );
    }

    #[test]
    fn a_range_starting_exactly_at_a_boundary_is_in_the_next_chunk() {
        assert_eq!(
            split(CS, 5, CS),
            vec![Piece {
                index: 1,
                offset_in_chunk: 0,
                buf_offset: 0,
                len: 5
            }]
        );
    }

    #[test]
    fn a_range_across_several_chunks_is_cut_at_each_boundary() {
        let pieces = split(CS - 3, 2 * CS + 10, CS);
        assert_eq!(
            pieces,
            vec![
                Piece {
                    index: 0,
                    offset_in_chunk: CS - 3,
                    buf_offset: 0,
                    len: 3
                },
                Piece {
                    index: 1,
                    offset_in_chunk: 0,
                    buf_offset: 3,
                    len: CS
                },
                Piece {
                    index: 2,
                    offset_in_chunk: 0,
                    buf_offset: CS + 3,
                    len: CS
                },
                Piece {
                    index: 3,
                    offset_in_chunk: 0,
                    buf_offset: 2 * CS + 3,
                    len: 7
                },
            ]
        );
    }

    #[test]
    fn empty_ranges_give_no_pieces() {
        assert!(split(123, 0, CS).is_empty());
        assert!(split(0, 10, 0).is_empty());
    }

    #[test]
    fn sequential_pieces_stop_at_chunk_boundaries() {
        assert_eq!(next_piece_len(0, 8 << 20, CS), CS);
        assert_eq!(next_piece_len(CS - 10, 8 << 20, CS), 10);
        assert_eq!(next_piece_len(CS, 100, CS), 100);
        assert_eq!(next_piece_len(5, 100, 0), 100);
    }
}
