// The seed's e-mail worker with a real mail library: nodemailer, installed by couchdb-events
// from this worker's package.json (no node_modules is pushed).
//
// nodemailer's JSON transport builds the whole message but sends nothing, so no mail server is
// needed: the message is written into an outbox folder under the worker's data directory (one
// .json file per message). For real mail, replace {jsonTransport: true} with an SMTP
// transport ({host: 'smtp.example.com', port: 587, auth: {...}}). Like the seed's workers it
// never answers: a message counts as done once it is delivered on stdin.
'use strict';

const fs = require('fs');
const path = require('path');
const readline = require('readline');
const nodemailer = require('nodemailer');

const dataDir = process.env.COUCHDB_EVENTS_DATA_DIR || process.cwd();
const outbox = path.join(dataDir, 'outbox');
fs.mkdirSync(outbox, { recursive: true });

const transport = nodemailer.createTransport({ jsonTransport: true });

function compose(message) {
  const args = message.arguments || {};
  const request = message.request || {};
  return {
    from: 'couchdb-events <events@localhost>',
    to: args.recipient,
    subject: args.subject || `Event ${message.event} fired`,
    text: `The event "${message.event}" was fired by ${request.method} ${request.path}.\n`,
    headers: { 'X-Event-Id': message.id },
  };
}

readline.createInterface({ input: process.stdin }).on('line', async (line) => {
  if (!line.trim()) return;
  let message;
  try {
    message = JSON.parse(line);
  } catch (err) {
    console.error(`sendmail: not a JSON message: ${err.message}`);
    return;
  }
  try {
    const info = await transport.sendMail(compose(message));
    const file = path.join(outbox, `${message.id}.json`);
    // Write then rename, so a reader never sees half a mail.
    fs.writeFileSync(`${file}.tmp`, info.message);
    fs.renameSync(`${file}.tmp`, file);
    console.error(`sendmail: mail for ${message.arguments.recipient} written to ${file}`);
  } catch (err) {
    console.error(`sendmail: cannot send: ${err.message}`);
  }
});
