import { assertNodeId, NODE_ID } from './ids.js';
import { KEY_END, prefixRange, seqKey, type KeyRange } from './storage.js';

/**
 * The storage layout: every key Troupe writes, built and parsed here and nowhere else.
 * All keys are sortable strings; numbers are zero-padded ({@link seqKey}).
 *
 * Per run (`<run>` is the run id):
 * - `run:<run>`                       the run index record
 * - `ckpt:<run>:<seq>`                a checkpoint: a small manifest (layout 2), or a whole
 *                                     deep snapshot in databases of layout 1
 * - `actor:<run>:<actor>:<seq>`       one actor's persisted state, written by checkpoint `seq`
 *                                     and valid until the actor's next record (layout 2)
 * - `log:<run>:<log>:<n>`             entry `n` of an append-only log (a conversation): each
 *                                     message is written once; actor records refer to ranges
 * - `logseg:<run>:<log>:<last>`       entries of a log packed into one value once there were
 *                                     enough of them, keyed by the last one's number (the
 *                                     entries it packs are no longer stored one by one)
 * - `jrnl:<run>:<seq>`                the journal: one fact per entry, in order
 * - `ledger:<run>:<callId>`           the effect ledger: intent and result of each call
 * - `mbox:<run>:<actor>:<seq>`        mailbox entries (undelivered beyond the actor's cursor)
 * - `seen:<run>:<slot>`               a ring of ids of envelopes accepted from outside the run
 * - `rout:<run>:<envelope>`           envelopes leaving the run, until the node routed them
 * - `inq:<run>:<sender>:<seq>:<n>`    mail for the run from another run (`<sender>` its run id)
 *                                     or from outside (`~<owner>`), written by the sender's
 *                                     batch (`<seq>` the sender's checkpoint or count, `<n>` its
 *                                     place in it) and deleted by the batch that accepts it
 *                                     (Postgres reads these keys in SQL too: the view
 *                                     `troupe_mail` and `claimable`, storage/postgres/)
 * - `claim:<run>`                     which node owns the run, with its fencing epoch
 * - `apprun:<run>:<approval>`         the index of the run's approvals, written with each
 *                                     approval's first record, so a resume reads its own
 *                                     approvals instead of every approval in the database
 * Shared:
 * - `approval:<id>`                   human approvals
 * - `blob:<hash>`                     long strings of actor records, content-addressed
 * - `audit:<seq>`                     the hash-chained audit log
 * - `audit.<node>:<seq>`              one node's audit chain, in a database nodes share
 * - `meta:layout`                     the layout version of this database
 * - `outbox:`, `outseq:`, `inbox:`, `transport:`, `deadletter:` the WebSocket transport's delivery state ({@link layout.transport})
 */

/** The layout this code writes. */
export const LAYOUT_VERSION = 2;

// The run id rule is core/ids.ts's; re-exported for the layout's users.
export { assertRunId } from './ids.js';

/** Everything after `prefix` in `key`. */
const after = (key: string, prefix: string) => key.slice(prefix.length);

/** The number at the end of `key` (after its last `:`). */
export const seqOf = (key: string): number => Number(key.slice(key.lastIndexOf(':') + 1));

/** Key builders and ranges, by concept. */
export const layout = {
  meta: 'meta:layout',

  run: (runId: string) => `run:${runId}`,
  runs: (): KeyRange => prefixRange('run:'),
  isRun: (key: string) => key.startsWith('run:'),
  /** The run id of a run index key (`run:<run>`). */
  runIdOf: (key: string) => after(key, 'run:'),

  checkpoint: (runId: string, seq: number) => `ckpt:${runId}:${seqKey(seq)}`,
  checkpoints: (runId: string, options?: { reverse?: boolean; limit?: number }): KeyRange => prefixRange(`ckpt:${runId}:`, options),
  isCheckpoint: (key: string) => key.startsWith('ckpt:'),

  actor: (runId: string, actorId: string, seq: number) => `actor:${runId}:${actorId}:${seqKey(seq)}`,
  isActor: (key: string) => key.startsWith('actor:'),
  /** Records of one actor written at or before checkpoint `seq`, newest first when `reverse`. */
  actorUpTo: (runId: string, actorId: string, seq: number, options?: { reverse?: boolean; limit?: number }): KeyRange => ({
    gte: `actor:${runId}:${actorId}:`,
    lt: `actor:${runId}:${actorId}:${seqKey(seq + 1)}`,
    ...options,
  }),
  actors: (runId: string): KeyRange => prefixRange(`actor:${runId}:`),
  /** Every record of one actor, oldest first. */
  actorRecords: (runId: string, actorId: string): KeyRange => prefixRange(`actor:${runId}:${actorId}:`),
  /** `[actorId, seq]` of an actor record key. */
  parseActor: (runId: string, key: string): [string, number] => {
    const rest = after(key, `actor:${runId}:`);
    const cut = rest.lastIndexOf(':');
    return [rest.slice(0, cut), Number(rest.slice(cut + 1))];
  },

  log: (runId: string, logId: string, n: number) => `log:${runId}:${logId}:${seqKey(n)}`,
  /** Entries `from` (inclusive) to `to` (exclusive) of a log. */
  logRange: (runId: string, logId: string, from: number, to: number): KeyRange => ({ gte: layout.log(runId, logId, from), lt: layout.log(runId, logId, to) }),
  logs: (runId: string): KeyRange => prefixRange(`log:${runId}:`),
  logSegment: (runId: string, logId: string, lastN: number) => `logseg:${runId}:${logId}:${seqKey(lastN)}`,
  /** Segments of a log whose last entry is `from` or later, in entry order. */
  logSegmentsFrom: (runId: string, logId: string, from: number): KeyRange => ({ gte: layout.logSegment(runId, logId, from), lt: `logseg:${runId}:${logId}:${KEY_END}` }),
  logSegments: (runId: string): KeyRange => prefixRange(`logseg:${runId}:`),
  isLogEntry: (key: string) => key.startsWith('log:'),
  isLogSegment: (key: string) => key.startsWith('logseg:'),
  /** `[logId, lastN]` of a log segment key. */
  parseLogSegment: (runId: string, key: string): [string, number] => {
    const rest = after(key, `logseg:${runId}:`);
    const cut = rest.lastIndexOf(':');
    return [rest.slice(0, cut), Number(rest.slice(cut + 1))];
  },

  journal: (runId: string, seq: number) => `jrnl:${runId}:${seqKey(seq)}`,
  journals: (runId: string): KeyRange => prefixRange(`jrnl:${runId}:`),
  isJournal: (key: string) => key.startsWith('jrnl:'),

  ledger: (runId: string, callId: string) => `ledger:${runId}:${callId}`,
  ledgers: (runId: string): KeyRange => prefixRange(`ledger:${runId}:`),
  isLedger: (key: string) => key.startsWith('ledger:'),

  mailbox: (runId: string, actorId: string, seq: number) => `mbox:${runId}:${actorId}:${seqKey(seq)}`,
  isMailbox: (key: string) => key.startsWith('mbox:'),
  /** Mail of `actorId` with a sequence number above `cursor`, up to `last` when given. */
  mailboxAfter: (runId: string, actorId: string, cursor: number, last?: number): KeyRange => ({
    gte: layout.mailbox(runId, actorId, cursor + 1),
    lt: last === undefined ? `mbox:${runId}:${actorId}:${KEY_END}` : layout.mailbox(runId, actorId, last + 1),
  }),
  mailboxes: (runId: string): KeyRange => prefixRange(`mbox:${runId}:`),

  seen: (runId: string, slot: number) => `seen:${runId}:${seqKey(slot)}`,
  seens: (runId: string): KeyRange => prefixRange(`seen:${runId}:`),

  routed: (runId: string, envelopeId: string) => `rout:${runId}:${envelopeId}`,
  routeds: (runId: string): KeyRange => prefixRange(`rout:${runId}:`),

  /**
   * Mail for `runId` from `sender` (a run id, or `~<owner>` for a node's `tell`): written by
   * the sender's own batch, so it is durable exactly when the sender's step is, and drained
   * into the run's mailbox by whichever node holds the run. Keys sort in the sender's order.
   */
  inboundMail: (runId: string, sender: string, seq: number, n: number) => `inq:${runId}:${sender}:${seqKey(seq)}:${String(n).padStart(4, '0')}`,
  /** Mail waiting for `runId`, oldest of each sender first. */
  inboundMails: (runId: string): KeyRange => prefixRange(`inq:${runId}:`),
  /** Mail waiting for `runId` from `sender`, oldest first. */
  inboundMailsFrom: (runId: string, sender: string): KeyRange => prefixRange(`inq:${runId}:${sender}:`),
  /** Mail waiting for any run. */
  allInboundMail: (): KeyRange => prefixRange('inq:'),
  /** Mail waiting for the runs after `runId` in key order (`;` is the character after `:`). */
  inboundMailAfterRun: (runId: string): KeyRange => ({ gte: `inq:${runId};`, lt: prefixRange('inq:').lt! }),
  isInboundMail: (key: string) => key.startsWith('inq:'),
  /** The run an inbound mail key is for. */
  inboundMailRunOf: (key: string) => layout.parseInboundMail(key).runId,
  /** The parts of an inbound mail key (run and sender ids hold no `:`). */
  parseInboundMail: (key: string): { runId: string; sender: string; seq: number; n: number } => {
    const [runId = '', sender = '', seq = '', n = ''] = after(key, 'inq:').split(':');
    return { runId, sender, seq: Number(seq), n: Number(n) };
  },
  /** The sender part of an inbound mail key for a node's `tell` (run ids never start with `~`). */
  outsideSender: (owner: string) => `~${owner}`,

  claim: (runId: string) => `claim:${runId}`,

  approval: (approvalId: string) => `approval:${approvalId}`,
  approvals: (): KeyRange => prefixRange('approval:'),
  /** The index entry of one of a run's approvals. */
  runApproval: (runId: string, approvalId: string) => `apprun:${runId}:${approvalId}`,
  runApprovals: (runId: string): KeyRange => prefixRange(`apprun:${runId}:`),
  /** The approval id of a run's approval index key. */
  runApprovalIdOf: (runId: string, key: string) => after(key, `apprun:${runId}:`),
  isApproval: (key: string) => key.startsWith('approval:'),
  /** The approval id of an approval key (`approval:<id>`). */
  approvalIdOf: (key: string) => after(key, 'approval:'),

  blob: (hash: string) => `blob:${hash}`,
  /** The hash of a blob key, or `undefined` for any other key. */
  blobHash: (key: string): string | undefined => (key.startsWith('blob:') ? after(key, 'blob:') : undefined),

  audit: (seq: number) => `audit:${seqKey(seq)}`,
  audits: (): KeyRange => prefixRange('audit:'),
  auditsAfter: (seq: number): KeyRange => ({ gte: layout.audit(seq + 1), lt: `audit:${KEY_END}` }),
  isAudit: (key: string) => key.startsWith('audit:'),
  /** The sequence number of an audit key, or `undefined` when the key is not strictly `audit:<12 digits>`. */
  auditSeq: (key: string): number | undefined => (/^audit:\d{12}$/.test(key) ? Number(after(key, 'audit:')) : undefined),
  /**
   * The keys of one audit chain: `audit:<seq>` for a database's one chain (no `chain`), or
   * `audit.<chain>:<seq>` for one node's chain in a database many nodes share (each node
   * chains what it writes; core/security.ts).
   */
  auditChain: (chain?: string) => {
    if (chain === undefined) return { key: layout.audit, range: layout.audits, after: layout.auditsAfter, is: layout.isAudit, seqOf: layout.auditSeq, shape: 'audit:<12 digits>' };
    // Audit chains are named by node ids: the one node id rule.
    assertNodeId(chain, 'audit chain (a node id)');
    const prefix = `audit.${chain}:`;
    const exact = new RegExp(`^${prefix.replaceAll('.', '\\.')}\\d{12}$`);
    return {
      key: (seq: number) => `${prefix}${seqKey(seq)}`,
      range: (): KeyRange => prefixRange(prefix),
      after: (seq: number): KeyRange => ({ gte: `${prefix}${seqKey(seq + 1)}`, lt: `${prefix}${KEY_END}` }),
      is: (key: string) => key.startsWith(prefix),
      seqOf: (key: string): number | undefined => (exact.test(key) ? Number(after(key, prefix)) : undefined),
      shape: `${prefix}<12 digits>`,
    };
  },
  /** Every key of every node's audit chain (`audit.<chain>:…`), chain by chain. */
  auditChains: (): KeyRange => prefixRange('audit.'),
  /** The keys of the chains after `chain` (`;` is the character after `:`). */
  auditChainsAfter: (chain: string): KeyRange => ({ gte: `audit.${chain};`, lt: prefixRange('audit.').lt! }),
  /** The chain of a key in {@link layout.auditChains}, `undefined` for any other key. */
  auditChainOf: (key: string): string | undefined => {
    const chain = /^audit\.([^:]*):/.exec(key)?.[1];
    return chain !== undefined && NODE_ID.test(chain) ? chain : undefined;
  },

  /** Whether `key` is one of the per-run keys of `runId` (in {@link layout.perRun}) or its run record. */
  ownedByRun: (runId: string, key: string): boolean => key === layout.run(runId) || layout.perRun(runId).some((r) => key >= r.gte! && key < r.lt!),
  /** Every per-run range: what a fork copies from and what deleting a run removes. */
  perRun: (runId: string): KeyRange[] => [
    prefixRange(`ckpt:${runId}:`),
    prefixRange(`actor:${runId}:`),
    prefixRange(`log:${runId}:`),
    prefixRange(`logseg:${runId}:`),
    prefixRange(`jrnl:${runId}:`),
    prefixRange(`ledger:${runId}:`),
    prefixRange(`mbox:${runId}:`),
    prefixRange(`seen:${runId}:`),
    prefixRange(`rout:${runId}:`),
    prefixRange(`apprun:${runId}:`),
  ],

  /**
   * The built-in WebSocket transport's delivery state (transports/outbox.ts, inbox.ts):
   * - `outbox:<toNode>:<seq>`              one envelope for `toNode` that a run's batch wrote
   * - `outbox:<toNode>:<first>..<last>`    envelopes `first`…`last` of one group commit (a msgpack array)
   * - `outseq:<toNode>`                    highest seq ever assigned to `toNode`
   * - `inbox:<fromNode>`                   `{ epoch, seq }` delivered from that sender
   * - `transport:epoch`                    this storage's outbox incarnation
   * - `deadletter:<slot>`, `deadletter:next` the ring of refused envelopes' summaries
   */
  transport: {
    outbox: (toNode: string, seq: number) => `outbox:${toNode}:${seqKey(seq)}`,
    outboxGroup: (toNode: string, first: number, last: number) => `outbox:${toNode}:${seqKey(first)}${OUTBOX_GROUP}${seqKey(last)}`,
    outboxes: (): KeyRange => prefixRange('outbox:'),
    /** The destination and seqs of an outbox key (`last` = `first` for a single envelope). */
    parseOutbox: (key: string): { toNode: string; first: number; last: number } => {
      const cut = key.lastIndexOf(':');
      const [first, last = first] = key.slice(cut + 1).split(OUTBOX_GROUP).map(Number);
      return { toNode: after(key.slice(0, cut), 'outbox:'), first: first!, last: last! };
    },
    outseq: (toNode: string) => `outseq:${toNode}`,
    outseqs: (): KeyRange => prefixRange('outseq:'),
    /** The destination of an `outseq:` key. */
    outseqNodeOf: (key: string) => after(key, 'outseq:'),
    inbox: (fromNode: string) => `inbox:${fromNode}`,
    epoch: 'transport:epoch',
    deadLetter: (slot: number) => `deadletter:${seqKey(slot)}`,
    deadLetters: (): KeyRange => prefixRange('deadletter:'),
    deadLetterNext: 'deadletter:next',
  },
} as const;

/** Between the first and last seq of an outbox group's key: no node id or seq holds it after the last `:`. */
const OUTBOX_GROUP = '..';
