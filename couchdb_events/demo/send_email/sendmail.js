// The seed's e-mail worker: listens on stdin for messages and "sends" each one.
//
// It writes the mail it would send into an outbox folder (one .eml file per message) under the
// worker's data directory, so the demo needs no mail server. A real worker would hand the mail
// to an SMTP server here instead. Like the seed's workers it never answers: a message counts as
// done once it is delivered on stdin. It exits when stdin closes.
'use strict';

const fs = require('fs');
const path = require('path');
const readline = require('readline');

const dataDir = process.env.COUCHDB_EVENTS_DATA_DIR || process.cwd();
const outbox = path.join(dataDir, 'outbox');
fs.mkdirSync(outbox, { recursive: true });

function compose(message) {
  const args = message.arguments || {};
  const request = message.request || {};
  return [
    `To: ${args.recipient}`,
    'From: couchdb-events <events@localhost>',
    `Subject: ${args.subject || `Event ${message.event} fired`}`,
    `X-Event-Id: ${message.id}`,
    '',
    `The event "${message.event}" was fired by ${request.method} ${request.path}.`,
    '',
  ].join('\r\n');
}

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (!line.trim()) return;
  let message;
  try {
    message = JSON.parse(line);
  } catch (err) {
    console.error(`sendmail: not a JSON message: ${err.message}`);
    return;
  }
  const file = path.join(outbox, `${message.id}.eml`);
  // Write then rename, so a reader never sees half a mail.
  fs.writeFileSync(`${file}.tmp`, compose(message));
  fs.renameSync(`${file}.tmp`, file);
  console.error(`sendmail: mail for ${message.arguments.recipient} written to ${file}`);
});
