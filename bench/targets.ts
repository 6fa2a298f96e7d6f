/**
 * Prints the persistence targets of a `npm run bench` JSON document as a markdown table
 * (what, Troupe, baseline, ratio, target, met), ready to paste into the README:
 *
 *   npm run bench -- --only persistence,persistenceSync,resume,langgraph > run.json
 *   npx tsx bench/targets.ts run.json
 *
 * Sections missing from the document are left out of the table; the targets are judged only
 * on a full (not `--quick`) document.
 */
import { readFile } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';

interface Window {
  messages: number;
  agents?: number;
  bytesPerStep: number;
  msPerStep: number;
  bytesRatio: number;
  msRatio: number;
}

const kb = (bytes: number) => `${(bytes / 1024).toFixed(2)} KB`;
const ms = (value: number) => `${value < 10 ? value.toFixed(2) : value.toFixed(1)} ms`;
const x = (value: number) => `${value.toFixed(2)}x`;
type Doc = Record<string, any>;

/** The rows of the table, one per figure. A `--quick` document is not judged (too few steps and trials). */
export function targetRows(doc: Doc): string[][] {
  const met = (ok: boolean) => (doc.quick ? 'quick run: not judged' : ok ? 'yes' : '**no**');
  const rows: string[][] = [];
  for (const [section, label] of [
    ['persistence', 'sync off'],
    ['persistenceSync', 'fsync'],
  ] as const) {
    const p = doc[section];
    if (!p || p.error) continue;
    const windows: Window[] | undefined = p.conversation?.windows;
    if (windows && windows.length > 1) {
      const first = windows[0]!;
      const last = windows[windows.length - 1]!;
      const mid = windows.length > 2 ? windows[1]! : undefined;
      const also = (w: Window | undefined, key: 'bytesRatio' | 'msRatio') => (w ? ` (${x(w[key])} at ${w.messages.toLocaleString('en')})` : '');
      rows.push([
        `bytes per agent step at ${last.messages.toLocaleString('en')} messages of one agent's conversation, ${label}`,
        kb(last.bytesPerStep),
        `the step at ${first.messages}: ${kb(first.bytesPerStep)}`,
        x(last.bytesRatio) + also(mid, 'bytesRatio'),
        '≤ 1.2x',
        met(last.bytesRatio <= 1.2),
      ]);
      rows.push([
        `time per agent step at ${last.messages.toLocaleString('en')} messages, ${label}`,
        ms(last.msPerStep),
        `the step at ${first.messages}: ${ms(first.msPerStep)}`,
        x(last.msRatio) + also(mid, 'msRatio'),
        '≤ 1.5x',
        met(last.msRatio <= 1.5),
      ]);
    }
    const sizes: Window[] | undefined = p.crews?.sizes;
    if (sizes && sizes.length > 1) {
      const first = sizes[0]!;
      const last = sizes[sizes.length - 1]!;
      const mid = sizes.length > 2 ? sizes[1]! : undefined;
      rows.push([
        `one agent step in a crew of ${last.agents!.toLocaleString('en')} agents where one works, ${label} (bytes ${x(last.bytesRatio)})`,
        ms(last.msPerStep),
        `${first.agents}-agent crew: ${ms(first.msPerStep)}`,
        x(last.msRatio) + (mid ? ` (${x(mid.msRatio)} at ${mid.agents})` : ''),
        '≤ 1.5x',
        met(last.msRatio <= 1.5),
      ]);
    }
  }
  const lg = doc.langgraph;
  if (lg && !lg.error && !lg.skipped) {
    for (const [key, label] of [
      ['noFsync', 'sync off / SQLite `synchronous=NORMAL`'],
      ['fsync', 'fsync / SQLite `synchronous=FULL`'],
    ] as const) {
      const v = lg[key];
      rows.push([
        `scripted ${v.steps}-step agent loop, checkpoint every step, ${label}`,
        `${v.troupe.agentStepsPerSec} steps/s`,
        `LangGraph.js + SqliteSaver: ${v.langGraph.agentStepsPerSec} steps/s`,
        x(v.troupeOverLangGraphStepsPerSec),
        '≥ 10x',
        met(v.troupeOverLangGraphStepsPerSec >= 10),
      ]);
    }
  }
  const c = doc.resume?.conversation;
  if (c) {
    rows.push([
      `cold resume of a run holding ${c.messages.toLocaleString('en')} messages (open LevelDB + \`createNode\` until the run handle), p50`,
      ms(c.coldResume.untilRunHandle.p50Ms),
      `open LevelDB + read one key: ${ms(c.baseline.levelOpenAndReadOneKey.p50Ms)}`,
      x(c.ratios.runHandleP50VsOpenAndReadOneKeyP50),
      '≤ 3x',
      met(c.ratios.runHandleP50VsOpenAndReadOneKeyP50 <= 3),
    ]);
  }
  return rows;
}

/** The rows as a markdown table. */
export function targetTable(doc: Doc): string {
  const head = ['what', 'Troupe', 'baseline, same process', 'ratio', 'target', 'met'];
  return [head, head.map(() => '---'), ...targetRows(doc)].map((r) => `| ${r.join(' | ')} |`).join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const file = process.argv[2];
  if (!file) throw new TypeError('usage: npx tsx bench/targets.ts <bench output.json>');
  console.log(targetTable(JSON.parse(await readFile(file, 'utf8')) as Doc));
}
