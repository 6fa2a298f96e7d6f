import { stripVTControlCharacters, styleText } from 'node:util';

/** A style `node:util` `styleText` accepts. */
export type Style = Parameters<typeof styleText>[0];

/** A piece of a line, painted with `style` when colour is on. */
export type Segment = readonly [style: Style | null, text: string];

// Terminal cells: East Asian wide characters and pictographs take two, combining marks none.
const WIDE = /[\u1100-\u115F\u2E80-\uA4CF\uAC00-\uD7A3\uF900-\uFAFF\uFE30-\uFE4F\uFF00-\uFF60\uFFE0-\uFFE6\u{1F300}-\u{1FAFF}\u{20000}-\u{3FFFD}]/u;
const ZERO = /[\p{Mn}\p{Me}\u200B-\u200F\uFE0F]/u;

/** Terminal cells `char` (one code point) takes. */
const cells = (char: string) => (ZERO.test(char) ? 0 : WIDE.test(char) ? 2 : 1);

/** Cells `text` takes on a terminal. */
export function textWidth(text: string): number {
  let width = 0;
  for (const char of text) width += cells(char);
  return width;
}

/**
 * Text from outside (model output, tool names, error messages) made safe for one line:
 * escape sequences and control characters removed, whitespace runs as one space.
 */
export function oneLine(text: string): string {
  return stripVTControlCharacters(text)
    .replace(/[\u0000-\u001F\u007F-\u009F]/g, ' ')
    .replace(/\s+/g, ' ')
    .trim();
}

/** `text` cut to at most `width` cells, ending in `…` when it was cut. */
export function truncate(text: string, width: number): string {
  return fitLine([[null, text]], width, false);
}

/** `text` cut or padded with spaces to exactly `width` cells. */
export function fixed(text: string, width: number): string {
  const cut = truncate(text, width);
  return cut + ' '.repeat(Math.max(0, width - textWidth(cut)));
}

/**
 * Joins `segments` into one line of at most `width` cells: what does not fit is cut, and
 * the cut is marked with `…`. Measured before painting, so colour never counts.
 */
export function fitLine(segments: readonly Segment[], width: number, color: boolean): string {
  const total = segments.reduce((n, [, text]) => n + textWidth(text), 0);
  const budget = total <= width ? width : Math.max(0, width - 1);
  let used = 0;
  let out = '';
  for (const [style, text] of segments) {
    let kept = '';
    for (const char of text) {
      const w = cells(char);
      if (used + w > budget) break;
      kept += char;
      used += w;
    }
    if (kept) out += color && style ? styleText(style, kept) : kept;
    if (kept.length < text.length) break;
  }
  return total <= width ? out : `${out}…`;
}

/**
 * Packs `pieces` into lines of at most `width` cells, joined by ` · `, each line starting
 * with `indent` (the first with `lead` instead, when given); a piece too long for any line
 * is cut.
 */
export function packLine(pieces: readonly string[], width: number, indent: string, lead = indent): string[] {
  const lines: string[] = [];
  let current = '';
  for (const piece of pieces) {
    const prefix = lines.length === 0 ? lead : indent;
    const candidate = current ? `${current} · ${piece}` : piece;
    if (!current || textWidth(prefix) + textWidth(candidate) <= width) current = candidate;
    else {
      lines.push(truncate(prefix + current, width));
      current = piece;
    }
  }
  if (current) lines.push(truncate((lines.length === 0 ? lead : indent) + current, width));
  return lines;
}
