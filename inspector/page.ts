import { readFileSync } from 'node:fs';

/**
 * The inspector page lives in `page.html` so it can be read and edited as HTML; this loader
 * reads it once and stamps the per-response CSP nonce on its inline `<style>` and `<script>`.
 * The page loads nothing else: no CDN, no fonts, no images; it needs no internet.
 */

const PLACEHOLDER = '__NONCE__';
let template: string | undefined;

/** The page's HTML with `nonce` on its inline tags. */
export function inspectorPage(nonce: string): string {
  // A nonce lands inside an attribute: only base64 characters may, or it could end the tag.
  if (!/^[A-Za-z0-9+/]{16,}={0,2}$/.test(nonce)) throw new TypeError('inspectorPage(nonce) needs a base64 nonce of at least 16 characters');
  template ??= readFileSync(new URL('./page.html', import.meta.url), 'utf8');
  return template.replaceAll(PLACEHOLDER, nonce);
}
