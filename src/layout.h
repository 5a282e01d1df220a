/*
 * layout.h: the packed Marlin weight and scale layouts, defined once.
 *
 * Packed B is a sequence of 16 x 64 tiles (k x n), row-major over the tile
 * grid: tile (kt, nt) starts at word (kt * n/64 + nt) * 128. Inside a tile,
 * lane l of a warp owns 4 consecutive words (one 16-byte load); word s covers
 * columns 16s..16s+15 of the tile, and its 8 nibbles are exactly the B
 * operand fragments that lane needs for two m16n8k16 tensor-core
 * instructions (columns 16s..16s+7 and 16s+8..16s+15):
 *
 *   lane l = 4*g + t  (g = l / 4 : column within an n8 block, t = l % 4)
 *   nibble p (bits 4p..4p+3), pair = p % 4, hi = p / 4:
 *     pair 0: n8 block 0, rows 2t + hi        pair 2: n8 block 1, rows 2t + hi
 *     pair 1: n8 block 0, rows 2t + 8 + hi    pair 3: n8 block 1, rows 2t + 8 + hi
 *   column = 16s + 8*(pair / 2) + g,  row = 2t + 8*(pair % 2) + hi
 *
 * Nibbles p and p + 4 sit 16 bits apart, so one mask (0x000f000f) and one OR
 * with the fp16 pattern of 1024 turn them into the half2 {1024+q_lo, 1024+q_hi}
 * that the instruction wants as one register (low half = even row).
 *
 * The same nibbles are the fragment of the transposed product (C^T = W^T A^T,
 * weights as the 16 x 16 M operand: rows g and g + 8 = columns 16s + g and
 * 16s + 8 + g) that warpgroup MMA and the kernel's 1..16-row path use.
 *
 * Scales: ceil(k/g) rows of n fp16; inside each 64-column block, entry
 * 8*g + 2s + j holds column 16s + 8j + g, so lane (g, t) reads the 8 scales of
 * its 8 columns with one 16-byte load.
 */
#ifndef MARLIN_LAYOUT_H
#define MARLIN_LAYOUT_H

#include <stddef.h>

#define MARLIN_WORDS_PER_TILE 128 /* 16 x 64 codes / 8 codes per word */
#define MARLIN_CODES_PER_WORD 8
#define MARLIN_CODE_BITS 4
#define MARLIN_CODE_MASK 0xFu

/* Where code (row, col) of a k x n matrix lives: word index and bit shift. */
static inline void marlin_layout_weight_position(int row, int col, int n, size_t* word, int* shift) {
    int tile_k = row / 16, r = row % 16;
    int tile_n = col / 64, c = col % 64;
    int s = c / 16, block = (c % 16) / 8, g = c % 8;
    int reg = r / 8, t = (r % 8) / 2, hi = r % 2;
    int lane = 4 * g + t;
    int nibble = (2 * block + reg) + 4 * hi;
    *word = ((size_t)tile_k * (size_t)(n / 64) + (size_t)tile_n) * MARLIN_WORDS_PER_TILE +
            (size_t)lane * 4 + (size_t)s;
    *shift = MARLIN_CODE_BITS * nibble;
}

/* Where the scale of column `col` lives inside its packed scale row. */
static inline int marlin_layout_scale_position(int col) {
    int c = col % 64;
    int s = c / 16, block = (c % 16) / 8, g = c % 8;
    return (col - c) + 8 * g + 2 * s + block;
}

#endif /* MARLIN_LAYOUT_H */
