/*
 * Helpers for couchdb-events workers written for Node (18+, no dependencies).
 *
 * The daemon puts this directory on every worker's NODE_PATH, so
 * require('couchdb-events-worker') just works; the file may also be attached to a
 * worker document and required as './couchdb-events-worker'.
 *
 * The worker contract
 * -------------------
 * The daemon starts a worker with its working directory set to a directory holding
 * the worker's code and writes one JSON object per line to the worker's stdin. Each
 * line is a message:
 *
 *   {"id": "...", "event": "...", "worker": "...", "arguments": {...},
 *    "request": {"method", "path", "query", "headers", "body", "peer", "user"}}
 *
 * The worker document's `mode` says how the worker answers:
 *   stream (default)  loop over stdin, never answer; exit when stdin ends.
 *   reply             answer each message, in order, with exactly one JSON line on
 *                     stdout, then get the next one. Any JSON value is an answer; an
 *                     object with a truthy "error" key means the run failed, e.g.
 *                     {"error": "TypeError", "reason": "..."}. Exit when stdin ends.
 *   once              read one message, may write one JSON answer line, and exit;
 *                     exit status 0 means success.
 *
 * stdout is only for answer lines: log anything else to stderr with log().
 *
 * Example, a reply worker:
 *
 *   const { onMessage, log } = require('couchdb-events-worker');
 *
 *   onMessage(async (message) => {
 *     const name = message.arguments.name || 'world';
 *     log('greeting', name);
 *     return { greeting: `hello ${name}` };
 *   }, { mode: 'reply' });
 */
'use strict';

const readline = require('node:readline');

const MODES = ['stream', 'reply', 'once'];

/** Print to stderr (stdout is only for answer lines). */
function log(...args) {
  console.error(...args);
}

/** Turn a thrown value into an error answer. */
function errorAnswer(err) {
  if (err instanceof Error) return { error: err.name, reason: err.message };
  return { error: 'Error', reason: String(err) };
}

/** Write one answer line; resolves once it has been handed to the OS. */
function writeAnswer(value) {
  let line;
  try {
    line = JSON.stringify(value);
    if (line === undefined) throw new TypeError(`a ${typeof value} is not JSON`);
  } catch (err) {
    log('couchdb-events-worker: the answer is not JSON:', err.message);
    line = JSON.stringify(errorAnswer(err));
  }
  return new Promise((resolve) => process.stdout.write(line + '\n', () => resolve()));
}

/** Parse one line into a message, or report it on stderr and return undefined. */
function parse(line, number) {
  if (!line.trim()) return undefined;
  let message;
  try {
    message = JSON.parse(line);
  } catch (err) {
    log(`couchdb-events-worker: line ${number} is not JSON (${err.message}); skipped`);
    return undefined;
  }
  if (message === null || typeof message !== 'object' || Array.isArray(message)) {
    log(`couchdb-events-worker: line ${number} is not a JSON object; skipped`);
    return undefined;
  }
  return message;
}

/**
 * Call handler(message) for each message on stdin; the handler may return a value
 * or a Promise. Messages are handled one at a time, so answers keep message order.
 *
 *   reply   the result (undefined or null means {"ok": true}) is written as one JSON
 *           line; a throw or rejection becomes {"error": err.name, "reason":
 *           err.message}, with the stack on stderr, and the loop carries on.
 *   stream  nothing is written; errors are logged and the loop carries on.
 *   once    the first message is handled and answered, then the process exits with
 *           0, or 1 if the handler failed (or stdin ended without a message).
 *
 * When stdin ends the process exits with 0 once pending messages are handled.
 */
function onMessage(handler, { mode = 'reply' } = {}) {
  if (!MODES.includes(mode)) {
    throw new TypeError(`mode must be one of ${MODES.join(', ')}, not ${JSON.stringify(mode)}`);
  }
  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  let queue = Promise.resolve(); // the chain that runs messages one at a time
  let number = 0;
  let taken = false; // once mode: the first message has been taken

  async function handle(message) {
    let answer;
    let failed = false;
    try {
      answer = await handler(message);
      if (answer === undefined || answer === null) answer = { ok: true };
    } catch (err) {
      failed = true;
      log(`couchdb-events-worker: message ${JSON.stringify(message.id)} failed:`);
      log(err instanceof Error && err.stack ? err.stack : err);
      answer = errorAnswer(err);
    }
    if (mode !== 'stream') await writeAnswer(answer);
    if (mode === 'once') process.exit(failed ? 1 : 0);
  }

  lines.on('line', (line) => {
    number += 1;
    if (taken) return;
    const message = parse(line, number);
    if (message === undefined) return;
    if (mode === 'once') taken = true;
    queue = queue.then(() => handle(message));
  });

  lines.on('close', () => {
    queue.then(() => {
      if (mode === 'once') {
        log('couchdb-events-worker: stdin ended before any message came');
        process.exit(1);
      }
      process.exit(0);
    });
  });
}

module.exports = { onMessage, log, MODES };
