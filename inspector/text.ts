/**
 * The inspector's one rule for text it sends to a page: control, zero-width and
 * bidi-override characters stripped, and a cap on length. Secrets are not this module's
 * business: the kernel scrubbed every value on its way to storage and to the event stream
 * (core/run-journal.ts, core/checkpoints.ts), and the inspector reads nothing else.
 */

/** Longest one-line preview (in characters) sent to the page: run list, timeline. */
export const PREVIEW_CHARS = 200;
/** Longest multi-line preview of a step's texts (messages, arguments, results) before "show all". */
export const STEP_PREVIEW_CHARS = 2_000;
/** Longest text sent when the page asks for one whole ("show all"). */
export const FULL_TEXT_CHARS = 1_000_000;

// Controls (but tab and newline), zero-width and bidirectional-override characters: nothing a page should echo.
const UNPRINTABLE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/g;

const textOf = (value: unknown, indent?: number): string =>
  typeof value === 'string' ? value : value === undefined || value === null ? '' : (JSON.stringify(value, null, indent) ?? String(value));

/** Text safe to stream on one line: unprintables stripped, whitespace runs folded, at most `max` characters. */
export function clean(value: unknown, max = PREVIEW_CHARS): string {
  const chars = Array.from(textOf(value).replace(UNPRINTABLE, '').replace(/\s+/g, ' ').trim());
  return chars.length > max ? `${chars.slice(0, max).join('')}…` : chars.join('');
}

/** A capped text of a step: what is shown, how long the whole is, whether it was cut. */
export interface TextPreview {
  text: string;
  /** Characters of the whole text. */
  chars: number;
  /** `true` when `text` is the first `max` characters only; the page offers the rest on demand. */
  cut: boolean;
}

/**
 * A value as the step view shows it: strings as they are, anything else as indented JSON;
 * line breaks kept, unprintables stripped, at most `max` characters.
 */
export function preview(value: unknown, max = STEP_PREVIEW_CHARS): TextPreview {
  const chars = Array.from(textOf(value, 2).replace(UNPRINTABLE, ''));
  return chars.length > max ? { text: chars.slice(0, max).join(''), chars: chars.length, cut: true } : { text: chars.join(''), chars: chars.length, cut: false };
}
