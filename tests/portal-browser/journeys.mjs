// Each role's main journey through the portal in headless chromium, for tests/e2e/portal.rs:
//   node journeys.mjs <base-url> <screenshot-dir>
// with CHROMIUM naming the browser binary. One browser, a fresh context (empty memory, as a
// new tab) per person. Checks what is on screen at each step; that no page reported a CSP
// violation, a console error or an uncaught exception; that no token was ever in
// localStorage, sessionStorage or a cookie the page can read. Prints "ok <journey>" per
// journey and exits non-zero with the first failure.

import { chromium } from 'playwright-core';
import { createHmac, generateKeyPairSync } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

const [base, shots] = process.argv.slice(2);
if (!base || !shots) throw new Error('usage: node journeys.mjs <base-url> <screenshot-dir>');
// The operator's token and the OpenID provider (oidc-provider, started by tests/e2e/portal.rs,
// its client registered with this portal's callback) for the operator and provider journeys.
const OPERATOR_TOKEN = process.env.HEALTH_OPERATOR_TOKEN;
const OIDC_ISSUER = process.env.HEALTH_OIDC_ISSUER;
if (!OPERATOR_TOKEN || !OIDC_ISSUER) throw new Error('HEALTH_OPERATOR_TOKEN and HEALTH_OIDC_ISSUER must be set');
// The tenant the operator creates and connects to the provider, and its first admin.
const NEW_TENANT = 'st-marys';
const OIDC_CLIENT = 'health-south';
const ROOT = { username: 'root', account: 'p-root', email: 'root@st-marys.example' };
const PIA_PASSWORD = 'pia-of-st-marys-2026';
mkdirSync(shots, { recursive: true });

// RFC 6238 (SHA-1, 30 s, 6 digits) from a base32 secret, for the step `step`.
function base32(text) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of text.replace(/=+$/, '').toUpperCase()) bits += alphabet.indexOf(c).toString(2).padStart(5, '0');
  const bytes = [];
  for (let i = 0; i + 8 <= bits.length; i += 8) bytes.push(parseInt(bits.slice(i, i + 8), 2));
  return Buffer.from(bytes);
}
function totp(secret, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = createHmac('sha1', base32(secret)).update(counter).digest();
  const offset = mac[mac.length - 1] & 0xf;
  const code = (mac.readUInt32BE(offset) & 0x7fffffff) % 1000000;
  return String(code).padStart(6, '0');
}
const nowStep = () => Math.floor(Date.now() / 1000 / 30);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
});

const problems = [];
// The page of the journey under way, shown in `failure.png` when a journey fails.
let lastPage = null;

// Staff the admin creates in the browser for the nurse, pharmacist and receptionist journeys.
const STAFF = [['nina', 'nurse'], ['paul', 'pharmacist'], ['rita', 'receptionist']];
const STAFF_PASSWORD = 'staff-portal-pass-2026';
// The patient the admin registers and erases (the receptionist finds it gone).
const ERASED = 'p-9901';
const staffIds = {};

async function person(name, { clock = false } = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: 'en-GB', timezoneId: 'UTC' });
  const page = await context.newPage();
  lastPage = page;
  // The page's timers under Playwright's clock (time still flows), so a test can jump ahead.
  if (clock) await page.clock.install();
  page.setDefaultTimeout(20000);
  await page.addInitScript(() => {
    window.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`);
    });
  });
  page.on('console', (msg) => {
    // Only the portal's pages are ours to vouch for, not the OpenID provider's (its sign-in page
    // imports a web font this offline test cannot load).
    if (msg.type() === 'error' && page.url().startsWith(base)) problems.push(`${name}: console error: ${msg.text()}`);
  });
  page.on('pageerror', (error) => problems.push(`${name}: uncaught: ${error.message}`));
  await page.goto(`${base}/`);
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  return { page, context };
}

// Expected refusals are shown as messages; the browser logs the failed fetch as a console
// error ("Failed to load resource: ... 403"), which is not a page fault.
// A first visit's refresh without a cookie is a 400 (`invalid_grant`), the page's sign-in form.
// A 404 is a refusal shown as a message too (a jti never issued).
// So is a 404 shown as a message (a jti never issued).
const EXPECTED = /Failed to load resource: the server responded with a status of (400|401|403|404)/;

async function expectText(page, text) {
  await page.getByText(text, { exact: false }).first().waitFor();
}

async function message(page, text) {
  await page.locator('#messages').getByText(text, { exact: false }).waitFor();
}

async function signIn(page, username, password) {
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

/** Enrols TOTP through the portal's QR page and signs in with the next code. */
async function enrolAndSignIn(page) {
  await page.getByRole('heading', { name: 'Set up your authenticator' }).waitFor();
  const qr = page.getByRole('img', { name: 'QR code of your authenticator secret' });
  await qr.waitFor();
  const modules = await qr.locator('path').getAttribute('d');
  if (!modules || modules.length < 1000) throw new Error('the QR code has no modules');
  const secret = (await page.locator('#totp-secret').textContent()).trim();
  const step = nowStep();
  await page.getByLabel('Code from your app').fill(totp(secret, step));
  await page.getByRole('button', { name: 'Confirm and sign in' }).click();
  await page.getByRole('heading', { name: 'Two-step verification' }).waitFor();
  // Each code works once: the next step's (accepted one step either side of now).
  await page.getByLabel('One-time code').fill(totp(secret, step + 1));
  await page.getByRole('button', { name: 'Verify' }).click();
}

async function finish(name, page, context, { keep = false } = {}) {
  const storage = await page.evaluate(() => ({
    local: localStorage.length,
    session: sessionStorage.length,
    cookie: document.cookie,
    csp: window.__csp,
    text: document.body.innerText,
  }));
  const broken = storage.text.match(BROKEN);
  if (broken) problems.push(`${name}: the page shows "${broken[0]}"`);
  if (storage.local || storage.session) problems.push(`${name}: web storage used: ${storage.local} local, ${storage.session} session`);
  if (storage.cookie) problems.push(`${name}: a script-readable cookie: ${storage.cookie}`);
  for (const v of storage.csp) problems.push(`${name}: CSP violation: ${v}`);
  if (!keep) await context.close();
  const real = problems.filter((p) => !EXPECTED.test(p));
  if (real.length) {
    console.error(real.join('\n'));
    await browser.close();
    process.exit(1);
  }
  problems.length = 0;
  console.log(`ok ${name}`);
}

const BROKEN = /Invalid Date|\bundefined\b|\bNaN\b|\[object Object\]/;

async function shot(page, file) {
  const broken = (await page.evaluate(() => document.body.innerText)).match(BROKEN);
  if (broken) problems.push(`${file}: the page shows "${broken[0]}"`);
  // Every control has a label or a name, every table a caption.
  const unnamed = await page.evaluate(() => [
    ...[...document.querySelectorAll('input, select, textarea')].filter((el) => el.labels.length === 0).map((el) => el.name),
    ...[...document.querySelectorAll('button, a')].filter((el) => !(el.getAttribute('aria-label') || el.textContent.trim())).map((el) => el.outerHTML),
    ...[...document.querySelectorAll('table')].filter((el) => !el.caption).map(() => 'a table without caption'),
  ]);
  if (unnamed.length) problems.push(`${file}: unlabelled: ${unnamed.join(', ')}`);
  await page.screenshot({ path: path.join(shots, file), fullPage: true });
}

async function run() {
  // Patient: own record, an entry's history, results, consent grant and withdrawal, the
  // access log, the export; then sign out.
  {
    const { page, context } = await person('patient');
    // From the keyboard alone: the focus starts on the heading, then follows the form.
    await page.keyboard.press('Tab');
    if ((await page.evaluate(() => document.activeElement.name)) !== 'tenant') throw new Error('focus order: not the organisation first');
    await page.keyboard.press('Tab');
    await page.keyboard.type('alice');
    await page.keyboard.press('Tab');
    await page.keyboard.type('alice-demo-2026');
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'My health record' }).waitFor();
    await expectText(page, 'Alice Andersen');
    await expectText(page, 'Type 2 diabetes mellitus');
    // The refresh token: in a cookie no script reads, sent to the session endpoints only.
    const cookies = await context.cookies();
    const refresh = cookies.find((c) => c.name === 'health_portal_refresh');
    if (!refresh || !refresh.httpOnly || !refresh.secure || refresh.sameSite !== 'Strict' || refresh.path !== '/auth/portal') {
      throw new Error(`the refresh cookie is not HttpOnly, Secure, SameSite=Strict on /auth/portal: ${JSON.stringify(cookies)}`);
    }
    if (cookies.length !== 1) throw new Error(`other cookies: ${JSON.stringify(cookies)}`);
    // A reload keeps the session (the cookie's refresh token, rotated), the record read again.
    await page.reload();
    await page.getByRole('heading', { name: 'My health record' }).waitFor();
    const rotated = (await context.cookies()).find((c) => c.name === 'health_portal_refresh');
    if (!rotated || rotated.value === refresh.value) throw new Error('the refresh token was not rotated on reload');
    await expectText(page, 'Alice Andersen');
    await page.getByRole('button', { name: 'History of diagnosis e-1' }).click();
    await page.getByRole('heading', { name: 'History of diagnosis e-1' }).waitFor();
    await page.getByRole('cell', { name: '7.2 mmol/L' }).waitFor();
    const consents = page.getByRole('form', { name: 'Grant consent' });
    await consents.getByLabel('Insurer').fill('acme-health');
    const until = new Date(Date.now() + 30 * 86400 * 1000).toISOString().slice(0, 10);
    await consents.getByLabel('Until').fill(until);
    await consents.getByRole('button', { name: 'Grant consent' }).click();
    await message(page, 'Consent granted to acme-health');
    const withdraw = page.getByRole('form', { name: 'Withdraw consent' });
    await withdraw.getByLabel('Insurer').fill('acme-health');
    await withdraw.getByRole('button', { name: 'Withdraw consent' }).click();
    await message(page, 'Consent withdrawn from acme-health');
    await page.getByRole('button', { name: 'Prepare my data export' }).click();
    await page.getByRole('link', { name: 'Download my data (JSON)' }).waitFor();
    const log = page.getByRole('table', { name: 'Access log, oldest first' });
    await log.getByRole('cell', { name: 'patient_self' }).first().waitFor();
    // A refusal in plain words: another patient's record.
    await shot(page, 'patient.png');
    await page.getByRole('button', { name: 'Sign out', exact: true }).click();
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    await message(page, 'You are signed out');
    // Signed out: the cookie is gone, and a reload does not sign in again.
    if ((await context.cookies()).length) throw new Error('the refresh cookie outlived the sign-out');
    await page.reload();
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    await finish('patient', page, context);
  }

  // Change password (bob), then sign in with the new one; a wrong password is a clear message.
  {
    const { page, context } = await person('password');
    await signIn(page, 'bob', 'wrong-password-2026');
    await message(page, 'The username, password or code is not right');
    // An insurer's account: told plainly, not signed in.
    await signIn(page, 'acme-insurance', 'acme-demo-2026');
    await message(page, 'insurer accounts use the API, not the portal');
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    await signIn(page, 'bob', 'bob-demo-2026');
    await page.getByRole('heading', { name: 'My health record' }).waitFor();
    await page.getByRole('button', { name: 'Change password' }).click();
    await page.getByLabel('Current password').fill('bob-demo-2026');
    await page.getByLabel('New password').fill('bob-new-password-2026');
    await page.getByRole('form', { name: 'Change password' }).getByRole('button', { name: 'Change password' }).click();
    await message(page, 'Password changed');
    await page.getByRole('button', { name: 'Sign out everywhere' }).click();
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    await signIn(page, 'bob', 'bob-new-password-2026');
    await page.getByRole('heading', { name: 'My health record' }).waitFor();
    // Bob's own record opens by itself (his account's link), never Alice's.
    await expectText(page, 'Bob Berg');
    if (await page.getByText('Alice Andersen').count()) throw new Error("Bob's view shows Alice");
    await finish('password', page, context);
  }

  // Doctor: TOTP enrolment from the QR page, my patients, a record, add and correct an entry
  // with its history, break-glass for a patient off the care team with its banner.
  {
    const { page, context } = await person('doctor');
    await signIn(page, 'dr-grey', 'grey-demo-2026');
    await enrolAndSignIn(page);
    await page.getByRole('heading', { name: 'My patients' }).waitFor();
    await page.getByRole('button', { name: 'Open p-1001' }).click();
    await page.getByRole('heading', { name: 'Patient p-1001' }).waitFor();
    await expectText(page, 'Metformin 500 mg twice daily');
    const add = page.getByRole('form', { name: 'Add an entry' });
    await add.getByLabel('Kind').selectOption('note');
    await add.getByLabel('Content').fill('Seen in clinic; feet examined, no ulcers.');
    await add.getByRole('button', { name: 'Add entry' }).click();
    await message(page, 'added');
    await page.getByRole('cell', { name: 'Seen in clinic; feet examined, no ulcers.' }).waitFor();
    const correct = page.getByRole('form', { name: 'Correct an entry' });
    await correct.getByLabel('Entry').selectOption('e-2');
    await correct.getByLabel('Corrected content').fill('Metformin 1000 mg twice daily');
    await correct.getByLabel('Reason for the correction').fill('Dose increased at review');
    await correct.getByRole('button', { name: 'Save correction' }).click();
    await message(page, 'version 2 replaces version 1');
    await page.getByRole('button', { name: 'History of medication e-2' }).click();
    await page.getByRole('cell', { name: 'Dose increased at review' }).waitFor();
    const orders = page.getByRole('table', { name: 'Lab orders of this patient' });
    await orders.getByRole('cell', { name: 'o-2001', exact: true }).waitFor();
    const order = page.getByRole('form', { name: 'Order a lab test' });
    await order.getByLabel('Lab', { exact: true }).fill('lab-north');
    await order.getByLabel('Test code').fill('2345-7');
    await order.getByLabel('Test name').fill('Glucose [Mass/volume] in Serum or Plasma');
    await order.getByLabel('Note to the lab').fill('Fasting sample, please');
    await order.getByRole('button', { name: 'Order test' }).click();
    await message(page, 'sent to lab-north');
    await orders.getByRole('cell', { name: 'Glucose [Mass/volume] in Serum or Plasma (2345-7)' }).waitFor();
    await orders.getByRole('cell', { name: 'Fasting sample, please' }).waitFor();
    // A lab the tenant has not registered: said plainly.
    await order.getByLabel('Lab', { exact: true }).fill('lab-nowhere');
    await order.getByLabel('Test code').fill('2345-7');
    await order.getByRole('button', { name: 'Order test' }).click();
    await message(page, 'The platform did not accept this');
    await page.getByRole('button', { name: 'Back to my patients' }).click();
    await page.getByLabel('Patient ID').fill('p-1002');
    await page.getByRole('button', { name: 'Open record' }).click();
    await page.getByRole('heading', { name: 'You are not on this patient’s care team' }).waitFor();
    await page.getByLabel('Reason').fill('Unconscious in the emergency department, no history available');
    await page.getByRole('button', { name: 'Break the glass' }).click();
    await page.getByRole('heading', { name: 'Patient p-1002' }).waitFor();
    await expectText(page, 'Essential hypertension');
    const banner = page.locator('#banner');
    await banner.getByText('Break-glass access to patient p-1002').waitFor();
    await shot(page, 'doctor.png');
    await finish('doctor', page, context);
  }

  // Lab: the order queue, a result entered, the order gone from the queue.
  {
    const { page, context } = await person('lab', { clock: true });
    let bearer = null;
    page.on('request', (request) => { bearer = request.headers().authorization || bearer; });
    await signIn(page, 'lab-north', 'lab-demo-2026');
    await page.getByRole('heading', { name: 'Lab orders' }).waitFor();
    await page.getByRole('cell', { name: 'o-2001', exact: true }).waitFor();
    await shot(page, 'lab.png');
    await page.getByRole('button', { name: 'Enter result for o-2001' }).click();
    const result = page.getByRole('form', { name: 'Result for o-2001' });
    await result.getByLabel('Value').fill('6.9');
    await result.getByLabel('Unit').fill('%');
    await result.getByRole('button', { name: 'Send result' }).click();
    await message(page, 'Result for o-2001 sent');
    await page.getByRole('cell', { name: 'o-2001', exact: true }).waitFor({ state: 'detached' });
    // Ten minutes without a key press or click: signed out (the token revoked), said so.
    await page.clock.fastForward('10:30');
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    await message(page, 'signed out after 10 minutes without activity');
    if (!bearer?.startsWith('Bearer ey')) throw new Error('no bearer token seen on the lab\'s requests');
    const after = await fetch(`${base}/api/lab/orders`, { headers: { authorization: bearer } });
    if (after.status !== 401) throw new Error(`the idle session's token still works: ${after.status}`);
    await finish('lab', page, context);
  }

  // Tenant admin: TOTP, users (create one), register a patient, a care team, the audit chain,
  // the break-glass alert acknowledged; sign out everywhere.
  {
    const { page, context } = await person('admin');
    await signIn(page, 'admin', 'admin-demo-2026');
    await enrolAndSignIn(page);
    await page.getByRole('heading', { name: 'Tenant administration' }).waitFor();
    const users = page.getByRole('table', { name: 'Users of this tenant' });
    await users.getByRole('cell', { name: 'u-dr-grey', exact: true }).waitFor();
    const labNorthId = (await users.getByRole('row').filter({ has: page.getByRole('cell', { name: 'lab-north', exact: true }) })
      .getByRole('cell').nth(1).textContent()).trim();
    const create = page.getByRole('form', { name: 'Create a user' });
    await create.getByLabel('Username').fill('carol');
    await create.getByLabel('Role').selectOption('patient');
    await create.getByLabel('Initial password').fill('carol-portal-2026');
    await create.getByRole('button', { name: 'Create user' }).click();
    await message(page, 'User carol created');
    await users.getByRole('cell', { name: 'carol', exact: true }).waitFor();
    // Disabled (her sessions ended), then enabled again.
    const carol = users.getByRole('row').filter({ has: page.getByRole('cell', { name: 'carol', exact: true }) });
    await page.getByRole('button', { name: 'Disable carol' }).click();
    await message(page, 'carol is disabled');
    await carol.getByRole('cell', { name: 'disabled', exact: true }).waitFor();
    await page.getByRole('button', { name: 'Enable carol' }).click();
    await message(page, 'carol is enabled again');
    await carol.getByRole('cell', { name: 'active', exact: true }).waitFor();
    // The staff of the next journeys: a nurse, a pharmacist and a receptionist.
    for (const [username, role] of STAFF) {
      await create.getByLabel('Username').fill(username);
      await create.getByLabel('Role').selectOption(role);
      await create.getByLabel('Initial password').fill(STAFF_PASSWORD);
      await create.getByRole('button', { name: 'Create user' }).click();
      await message(page, `User ${username} created`);
      const row = users.getByRole('row').filter({ has: page.getByRole('cell', { name: username, exact: true }) });
      staffIds[username] = (await row.getByRole('cell').nth(1).textContent()).trim();
      if (!staffIds[username].startsWith('u-')) throw new Error(`no user id for ${username}: ${staffIds[username]}`);
    }
    const register = page.getByRole('form', { name: 'Register a patient' });
    await register.getByLabel('Given name').fill('Dora');
    await register.getByLabel('Family name').fill('Dahl');
    await register.getByLabel('Birth date').fill('1990-05-17');
    await register.getByRole('button', { name: 'Register patient' }).click();
    await message(page, 'registered');
    const care = page.getByRole('form', { name: 'Add to a care team' });
    await care.getByLabel('Patient ID').fill('p-1002');
    await care.getByLabel('Clinician (user id)').fill('u-dr-grey');
    await care.getByLabel('Reason').selectOption('referral');
    await care.getByRole('button', { name: 'Add to care team' }).click();
    await message(page, 'u-dr-grey is on p-1002’s care team');
    await care.getByLabel('Patient ID').fill('p-1001');
    await care.getByLabel('Clinician (user id)').fill(staffIds.nina);
    await care.getByLabel('Reason').selectOption('admission');
    await care.getByRole('button', { name: 'Add to care team' }).click();
    await message(page, `${staffIds.nina} is on p-1001’s care team`);
    await page.getByRole('button', { name: 'Check the audit chain' }).click();
    await page.locator('#chain-result').getByText('Intact').waitFor();
    await page.getByRole('cell', { name: 'break_glass' }).first().waitFor();
    const review = page.getByRole('table', { name: 'Break-glass grants and the accesses they allowed' });
    await review.getByRole('cell', { name: 'Unconscious in the emergency department' }).first().waitFor();
    await shot(page, 'admin.png');
    // The audit search: the doctor's allowed events, then their export.
    const audit = page.getByRole('form', { name: 'Search the audit log' });
    await audit.getByLabel('Actor (user id)').fill('u-dr-grey');
    await audit.getByLabel('Outcome').selectOption('allow');
    await audit.getByRole('button', { name: 'Search' }).click();
    const events = page.getByRole('table', { name: 'Audit events, oldest first' });
    await events.getByRole('cell', { name: 'POST /api/patients/{id}/lab-orders', exact: true }).first().waitFor();
    const outcomes = await events.locator('tbody tr td:nth-child(6)').allTextContents();
    if (!outcomes.length || outcomes.some((o) => o !== 'allow')) throw new Error(`the outcome filter let through ${outcomes}`);
    await page.getByRole('button', { name: 'Prepare the export' }).click();
    await message(page, 'The audit export is ready');
    const [download] = await Promise.all([page.waitForEvent('download'), page.locator('#audit-export-link').click()]);
    const exported = readFileSync(await download.path(), 'utf8');
    const lines = exported.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
    if (!lines.length || lines.some((l) => l.event.actor_sub !== 'u-dr-grey' || l.event.outcome !== 'allow')) {
      throw new Error(`the export does not hold just the filtered events: ${lines.length} lines`);
    }
    // Unfiltered, page by page: 50 a page, the next page after the last shown.
    await audit.getByLabel('Actor (user id)').fill('');
    await audit.getByLabel('Outcome').selectOption('');
    await audit.getByRole('button', { name: 'Search' }).click();
    await page.getByText('50 events shown.', { exact: true }).waitFor();
    const firstPage = await events.locator('tbody tr td:nth-child(1)').allTextContents();
    await page.getByRole('button', { name: 'More events' }).click();
    await page.getByText(/^(5[1-9]|[6-9]\d|100) events shown\.$/).waitFor();
    const seqs = (await events.locator('tbody tr td:nth-child(1)').allTextContents()).map(Number);
    if (seqs.slice(0, 50).join() !== firstPage.join() || seqs.some((s, i) => i && s <= seqs[i - 1])) {
      throw new Error(`the pages do not follow each other: ${seqs.join()}`);
    }
    await page.getByRole('button', { name: /^Acknowledge alert/ }).first().click();
    await message(page, 'acknowledged');
    // A password reset (carol's), then carol's account linked to a record made for the purpose,
    // which is then erased: the confirmation says what it does and wants the id typed.
    const reset = page.getByRole('form', { name: 'Reset a password' });
    await reset.getByLabel('User', { exact: true }).selectOption({ label: 'carol (patient)' });
    await reset.getByLabel('New password').fill('carol-reset-pass-2026');
    await reset.getByRole('button', { name: 'Reset password' }).click();
    await message(page, 'carol’s password is reset');
    const carolId = (await carol.getByRole('cell').nth(1).textContent()).trim();
    await register.getByLabel('Patient ID').fill(ERASED);
    await register.getByLabel('Given name').fill('Ezra');
    await register.getByLabel('Family name').fill('Erased');
    await register.getByLabel('Birth date').fill('1970-01-02');
    await register.getByRole('button', { name: 'Register patient' }).click();
    await message(page, `Patient ${ERASED} registered`);
    await page.getByRole('button', { name: 'Labs, accounts and erasure' }).click();
    await page.getByRole('heading', { name: 'Labs, accounts and erasure', level: 1 }).waitFor();
    // A lab organisation registered, lab-north's user attached, then detached and attached again.
    const labReg = page.getByRole('form', { name: 'Register a lab' });
    await labReg.getByLabel('Lab id').fill('lab-east');
    await labReg.getByLabel('Name').fill('East Pathology');
    await labReg.getByRole('button', { name: 'Register lab' }).click();
    await message(page, 'Lab lab-east registered');
    const labs = page.getByRole('table', { name: 'Lab organisations of this tenant' });
    await labs.getByRole('cell', { name: 'East Pathology', exact: true }).waitFor();
    const attach = page.getByRole('form', { name: 'Attach a lab user' });
    await attach.getByLabel('Lab', { exact: true }).selectOption('lab-east');
    await attach.getByLabel('Lab user (user id)').fill(labNorthId);
    await attach.getByRole('button', { name: 'Attach user' }).click();
    await message(page, `${labNorthId} is a member of lab-east`);
    await page.getByRole('button', { name: `Detach ${labNorthId} from lab-east` }).click();
    await message(page, `${labNorthId} is no longer a member of lab-east`);
    await page.getByRole('button', { name: `Detach ${labNorthId} from lab-east` }).waitFor({ state: 'detached' });
    const linkAccount = page.getByRole('form', { name: 'Link a patient account' });
    await linkAccount.getByLabel('Patient ID').fill(ERASED);
    await linkAccount.getByLabel('Patient account (user id)').fill(carolId);
    await linkAccount.getByRole('button', { name: 'Link account' }).click();
    await message(page, `Linked: ${carolId} now reads record ${ERASED}`);
    await page.getByRole('button', { name: 'Rotate the data key' }).click();
    await message(page, 'Data key rotated');
    const erase = page.getByRole('form', { name: 'Erase a patient' });
    await erase.getByLabel('Patient ID').fill(ERASED);
    await erase.getByRole('button', { name: 'Erase…' }).click();
    await page.getByRole('heading', { name: `Erase patient ${ERASED}?` }).waitFor();
    await expectText(page, 'unreadable for good');
    await page.getByLabel('Type the patient ID to confirm').fill('p-wrong');
    await page.getByRole('button', { name: `Erase ${ERASED} for good` }).click();
    await message(page, 'does not match: nothing erased');
    await page.getByLabel('Type the patient ID to confirm').fill(ERASED);
    await page.getByRole('button', { name: `Erase ${ERASED} for good` }).click();
    await message(page, `Patient ${ERASED} erased`);
    await message(page, 'Their account is disabled');
    // Insurer clients: one registered with a P-256 public key (the one-time secret shown), disabled.
    await page.getByRole('button', { name: 'Back to administration' }).click();
    await users.getByRole('row').filter({ has: page.getByRole('cell', { name: 'carol', exact: true }) })
      .getByRole('cell', { name: 'disabled', exact: true }).waitFor();
    await page.getByRole('button', { name: 'Insurer clients' }).click();
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jwk = { ...publicKey.export({ format: 'jwk' }), use: 'enc', kid: 'portal-insurer-1' };
    const client = page.getByRole('form', { name: 'Register an insurer client' });
    await client.getByLabel('Name').fill('Portal Mutual');
    await client.getByLabel('Encryption public JWK').fill(JSON.stringify(jwk));
    await client.getByRole('button', { name: 'Register client' }).click();
    await message(page, 'Insurer client Portal Mutual registered');
    if (!(await page.locator('#new-client-secret').textContent()).trim()) throw new Error('no client secret shown');
    const clients = page.getByRole('table', { name: 'Insurer clients of this tenant' });
    await clients.getByRole('cell', { name: 'Portal Mutual', exact: true }).waitFor();
    await page.getByRole('button', { name: 'Disable Portal Mutual' }).click();
    await message(page, 'Portal Mutual is disabled');
    await page.getByRole('button', { name: 'Enable Portal Mutual' }).click();
    await message(page, 'Portal Mutual is enabled again');
    await page.getByRole('button', { name: 'Back to administration' }).click();
    await page.getByRole('button', { name: 'Sign out everywhere' }).click();
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    await finish('admin', page, context);
  }

  // Receptionist: TOTP, registers a patient, corrects their details, admits the pharmacist to
  // p-1001's care team; sees no clinical content.
  {
    const { page, context } = await person('receptionist');
    await signIn(page, 'rita', STAFF_PASSWORD);
    await enrolAndSignIn(page);
    await page.getByRole('heading', { name: 'Reception' }).waitFor();
    const register = page.getByRole('form', { name: 'Register a patient' });
    await register.getByLabel('Patient ID').fill('p-7001');
    await register.getByLabel('Given name').fill('Erik');
    await register.getByLabel('Family name').fill('Ek');
    await register.getByLabel('Birth date').fill('1984-02-29');
    await register.getByRole('button', { name: 'Register patient' }).click();
    await message(page, 'Patient p-7001 registered');
    const find = page.getByRole('form', { name: 'Look up a patient' });
    await find.getByLabel('Patient ID').fill('p-7001');
    await find.getByRole('button', { name: 'Look up' }).click();
    const details = page.getByRole('form', { name: 'Details of p-7001' });
    if ((await details.getByLabel('Given name').inputValue()) !== 'Erik') throw new Error('the details are not the registered ones');
    await details.getByLabel('Family name').fill('Ekström');
    await details.getByRole('button', { name: 'Save details' }).click();
    await message(page, 'Details of p-7001 saved');
    // Read back: the saved name.
    await find.getByRole('button', { name: 'Look up' }).click();
    await page.getByRole('form', { name: 'Details of p-7001' }).getByLabel('Family name').waitFor();
    const family = await page.getByRole('form', { name: 'Details of p-7001' }).getByLabel('Family name').inputValue();
    if (family !== 'Ekström') throw new Error(`the edit was not kept: ${family}`);
    const admit = page.getByRole('form', { name: 'Add to a care team' });
    await admit.getByLabel('Patient ID').fill('p-1001');
    await admit.getByLabel('Clinician (user id)').fill(staffIds.paul);
    await admit.getByLabel('Reason').selectOption('consultation');
    await admit.getByRole('button', { name: 'Add to care team' }).click();
    await message(page, `${staffIds.paul} is on p-1001’s care team`);
    await shot(page, 'receptionist.png');
    // The record the admin erased is gone.
    await find.getByLabel('Patient ID').fill(ERASED);
    await find.getByRole('button', { name: 'Look up' }).click();
    await page.locator('#messages .message.error').waitFor();
    if (await page.getByRole('form', { name: `Details of ${ERASED}` }).count()) throw new Error('the erased record still reads');
    await finish('receptionist', page, context);
  }

  // Nurse: TOTP, my patients, a record with lab results, an observation added (the form offers
  // notes and observations only).
  {
    const { page, context } = await person('nurse');
    await signIn(page, 'nina', STAFF_PASSWORD);
    await enrolAndSignIn(page);
    await page.getByRole('heading', { name: 'My patients' }).waitFor();
    await page.getByRole('button', { name: 'Open p-1001' }).click();
    await page.getByRole('heading', { name: 'Patient p-1001' }).waitFor();
    await expectText(page, 'Type 2 diabetes mellitus');
    await page.getByRole('table', { name: 'Lab results' }).getByRole('cell', { name: '6.9 %' }).waitFor();
    const add = page.getByRole('form', { name: 'Add a note or observation' });
    const kinds = await add.getByLabel('Kind').locator('option').evaluateAll((os) => os.map((o) => o.value));
    if (kinds.join() !== 'note,observation') throw new Error(`the nurse is offered ${kinds}`);
    await add.getByLabel('Kind').selectOption('observation');
    await add.getByLabel('Content').fill('BP 128/82 mmHg, pulse 72, temperature 36.8 °C');
    await add.getByRole('button', { name: 'Add entry' }).click();
    await message(page, 'added');
    await page.getByRole('cell', { name: 'BP 128/82 mmHg, pulse 72, temperature 36.8 °C' }).waitFor();
    // Her own kinds corrected, as the doctor corrects his: only notes and observations offered.
    const correct = page.getByRole('form', { name: 'Correct an entry' });
    const offered = await correct.getByLabel('Entry').locator('option').evaluateAll((os) => os.map((o) => [o.value, o.textContent]));
    if (!offered.length || offered.some(([, text]) => !/^(note|observation): /.test(text))) {
      throw new Error(`the nurse may correct ${JSON.stringify(offered)}`);
    }
    const observation = offered.find(([, text]) => text.startsWith('observation: BP 128/82'));
    if (!observation) throw new Error(`her observation is not offered: ${JSON.stringify(offered)}`);
    await correct.getByLabel('Entry').selectOption(observation[0]);
    await correct.getByLabel('Corrected content').fill('BP 128/84 mmHg, pulse 72, temperature 36.8 °C');
    await correct.getByLabel('Reason for the correction').fill('Diastolic misread');
    await correct.getByRole('button', { name: 'Save correction' }).click();
    await message(page, 'version 2 replaces version 1');
    await page.getByRole('cell', { name: 'BP 128/84 mmHg, pulse 72, temperature 36.8 °C' }).waitFor();
    await page.getByRole('button', { name: `History of observation ${observation[0]}` }).click();
    await page.getByRole('cell', { name: 'Diastolic misread' }).waitFor();
    await shot(page, 'nurse.png');
    await finish('nurse', page, context);
  }

  // Pharmacist: TOTP, my patients, a record of medication and allergies only.
  {
    const { page, context } = await person('pharmacist');
    await signIn(page, 'paul', STAFF_PASSWORD);
    await enrolAndSignIn(page);
    await page.getByRole('heading', { name: 'My patients' }).waitFor();
    await page.getByRole('button', { name: 'Open p-1001' }).click();
    await page.getByRole('heading', { name: 'Patient p-1001' }).waitFor();
    const entries = page.getByRole('table', { name: 'Record entries' });
    await entries.getByRole('cell', { name: 'Metformin 1000 mg twice daily' }).waitFor();
    await expectText(page, 'Alice Andersen');
    for (const hidden of ['Type 2 diabetes mellitus', 'BP 128/82', 'Seen in clinic']) {
      if (await page.getByText(hidden).count()) throw new Error(`the pharmacist sees "${hidden}"`);
    }
    await shot(page, 'pharmacist.png');
    await finish('pharmacist', page, context);
  }

  // The platform operator: the token pasted (a wrong one refused), a tenant created, its first
  // admin, linked to their identity at the provider, the provider set, turned off and on again,
  // the tenant's keys and audit chain (checked, exported); the token forgotten on a reload, on
  // sign-out and after 10 minutes idle.
  {
    const { page, context } = await person('operator', { clock: true });
    const operator = page.getByRole('form', { name: 'Operator' });
    await operator.getByLabel('Operator token').fill('not-the-operator-token');
    await operator.getByRole('button', { name: 'Continue as operator' }).click();
    await message(page, 'That is not the platform operator token');
    await operator.getByLabel('Operator token').fill(OPERATOR_TOKEN);
    await operator.getByRole('button', { name: 'Continue as operator' }).click();
    await page.getByRole('heading', { name: 'Platform operation' }).waitFor();
    await page.locator('#account').getByText('Platform operator').waitFor();
    const refused = page.getByRole('region', { name: 'Requests refused before any tenant' });
    await refused.getByRole('button', { name: 'Check the audit chain' }).click();
    await refused.getByText(/^Intact: \d+ events/).waitFor();
    const create = page.getByRole('form', { name: 'Create a tenant' });
    await create.getByLabel('Tenant id').fill(NEW_TENANT);
    await create.getByRole('button', { name: 'Create tenant' }).click();
    await page.getByRole('heading', { name: `Tenant ${NEW_TENANT}` }).waitFor();
    await message(page, `Tenant ${NEW_TENANT} created`);
    // Its first admin: the role offered first.
    const users = page.getByRole('form', { name: 'Create a user' });
    if ((await users.getByLabel('Role').inputValue()) !== 'admin') throw new Error('the operator is not offered an admin first');
    await users.getByLabel('Username').fill(ROOT.username);
    await users.getByLabel('Initial password').fill('root-of-st-marys-2026');
    await users.getByRole('button', { name: 'Create user' }).click();
    await message(page, `User ${ROOT.username} created`);
    const list = page.getByRole('table', { name: 'Users of this tenant' });
    await list.getByRole('cell', { name: ROOT.username, exact: true }).waitFor();
    // A patient of the new tenant, whose token its admin revokes below.
    await users.getByLabel('Username').fill('pia');
    await users.getByLabel('Role').selectOption('patient');
    await users.getByLabel('Initial password').fill(PIA_PASSWORD);
    await users.getByRole('button', { name: 'Create user' }).click();
    await message(page, 'User pia created');
    const link = page.getByRole('form', { name: 'Link a provider identity' });
    await link.getByLabel('User', { exact: true }).selectOption({ label: `${ROOT.username} (admin)` });
    await link.getByLabel('Identity at the provider').fill(ROOT.email);
    await link.getByRole('button', { name: 'Link identity' }).click();
    await message(page, `Linked: ${ROOT.email} signs in as ${ROOT.username}`);
    await list.getByRole('cell', { name: ROOT.email, exact: true }).waitFor();
    // The provider: set, shown, turned off (settings kept), on again.
    const provider = page.getByRole('form', { name: 'Set the OpenID provider' });
    await page.getByText('No OpenID provider is set').waitFor();
    await provider.getByLabel('Issuer').fill(OIDC_ISSUER);
    await provider.getByLabel('Audience (client id)').fill(OIDC_CLIENT);
    await provider.getByLabel('Discovery URL').fill(`${OIDC_ISSUER}/.well-known/openid-configuration`);
    await provider.getByRole('button', { name: 'Save provider' }).click();
    await message(page, `OpenID provider of ${NEW_TENANT} saved: on`);
    await page.getByRole('definition').getByText(OIDC_ISSUER, { exact: true }).waitFor();
    await expectText(page, `${base}/auth/federation/${NEW_TENANT}/callback`);
    await page.getByRole('button', { name: 'Turn the provider off' }).click();
    await message(page, 'turned off');
    const again = page.getByRole('form', { name: 'Set the OpenID provider' });
    if ((await again.getByLabel('Issuer').inputValue()) !== OIDC_ISSUER) throw new Error('the settings were not kept');
    await again.getByLabel('Enabled').check();
    await again.getByRole('button', { name: 'Save provider' }).click();
    await message(page, `OpenID provider of ${NEW_TENANT} saved: on`);
    // Its keys: one active signing and one active encryption key.
    const keys = page.getByRole('table', { name: `Signing and encryption keys of ${NEW_TENANT}, no private material` });
    await keys.getByRole('cell', { name: 'signing', exact: true }).waitFor();
    await keys.getByRole('cell', { name: 'encryption', exact: true }).waitFor();
    if ((await keys.getByRole('cell', { name: 'active', exact: true }).count()) !== 2) throw new Error('not two active keys');
    // Its audit chain: intact, and the export holds its events (the tenant's creation first).
    const chain = page.getByRole('region', { name: `Audit chain of ${NEW_TENANT}` });
    await chain.getByRole('button', { name: 'Check the audit chain' }).click();
    await chain.getByText(/^Intact: \d+ events/).waitFor();
    await chain.getByRole('button', { name: 'Prepare the export' }).click();
    await message(page, 'The audit export is ready');
    const [download] = await Promise.all([page.waitForEvent('download'), chain.getByRole('link', { name: /^Download the audit chain/ }).click()]);
    const events = readFileSync(await download.path(), 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
    const actions = events.map((e) => e.event.action);
    if (events.some((e) => e.event.tenant_id !== NEW_TENANT) || !actions.includes('tenant.create') || !actions.includes('admin.users.create')) {
      throw new Error(`the export is not ${NEW_TENANT}'s chain: ${actions.join()}`);
    }
    await shot(page, 'operator.png');
    // The token was in this page's memory only: a reload forgets it.
    if ((await context.cookies()).length) throw new Error(`the operator has cookies: ${JSON.stringify(await context.cookies())}`);
    await page.reload();
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    const signInAgain = async () => {
      await page.getByRole('form', { name: 'Operator' }).getByLabel('Operator token').fill(OPERATOR_TOKEN);
      await page.getByRole('button', { name: 'Continue as operator' }).click();
      await page.getByRole('heading', { name: 'Platform operation' }).waitFor();
    };
    await signInAgain();
    await page.getByRole('button', { name: 'Sign out', exact: true }).click();
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    await signInAgain();
    await page.clock.fastForward('10:30');
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    await message(page, 'signed out after 10 minutes without activity');
    await finish('operator', page, context);
  }

  // Sign-in with the tenant's OpenID provider in the browser: the portal offers it for the tenant
  // typed, oidc-provider's own login and consent forms, back signed in as the linked admin.
  // Then that tenant admin's keys: rotate the signing key, revoke a token by its jti and the
  // retiring key (after the confirmation says what it does).
  {
    const { page, context } = await person('oidc');
    await page.getByLabel('Organisation').fill(NEW_TENANT);
    await page.getByLabel('Organisation').press('Tab');
    await page.getByRole('button', { name: 'Sign in with your hospital’s identity provider' }).click();
    await page.waitForURL((url) => url.href.startsWith(OIDC_ISSUER));
    await page.locator('input[name="login"]').fill(ROOT.account);
    await page.locator('input[name="password"]').fill('any');
    await page.getByRole('button', { name: 'Sign-in' }).click();
    await page.getByRole('button', { name: 'Continue' }).click();
    await page.waitForURL(`${base}/app/`);
    await page.getByRole('heading', { name: 'Tenant administration' }).waitFor();
    await page.locator('#account').getByText(`admin · ${NEW_TENANT}`).waitFor();
    const refresh = (await context.cookies()).find((c) => c.name === 'health_portal_refresh');
    if (!refresh?.httpOnly || !refresh.secure || refresh.sameSite !== 'Strict' || refresh.path !== '/auth/portal') {
      throw new Error(`the provider's sign-in did not end in the portal's HttpOnly cookie: ${JSON.stringify(await context.cookies())}`);
    }
    await finish('oidc', page, context, { keep: true });

    await page.getByRole('button', { name: 'Keys and tokens' }).click();
    await page.getByRole('heading', { name: 'Keys and tokens' }).waitFor();
    const keys = page.getByRole('table', { name: `Signing and encryption keys of ${NEW_TENANT}, no private material` });
    const signing = keys.getByRole('row').filter({ has: page.getByRole('cell', { name: 'signing', exact: true }) });
    await signing.first().waitFor();
    const oldKid = (await signing.first().getByRole('cell').first().textContent()).trim();
    const rotate = page.getByRole('form', { name: 'Rotate a key' });
    await rotate.getByLabel('Use').selectOption('sig');
    await rotate.getByLabel('Algorithm').selectOption('ES256');
    await rotate.getByRole('button', { name: 'Rotate key' }).click();
    await message(page, 'New signing key');
    await keys.getByRole('cell', { name: 'ES256', exact: true }).waitFor();
    const retiring = keys.getByRole('row').filter({ has: page.getByRole('cell', { name: oldKid, exact: true }) });
    await retiring.getByRole('cell', { name: 'retiring', exact: true }).waitFor();
    // A patient's token (pia's sign-in through the API), revoked by its jti: refused at once.
    const login = await fetch(`${base}/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ tenant: NEW_TENANT, username: 'pia', password: PIA_PASSWORD }),
    });
    if (login.status !== 200) throw new Error(`pia's sign-in: ${login.status}`);
    const old = `Bearer ${(await login.json()).access_token}`;
    const jti = JSON.parse(Buffer.from(old.split('.')[1], 'base64url').toString()).jti;
    const revoke = page.getByRole('form', { name: 'Revoke a token' });
    await revoke.getByLabel('Token id (jti)').fill('never-issued-jti');
    await revoke.getByRole('button', { name: 'Revoke token' }).click();
    await message(page, 'No token with this jti was issued');
    // Her record is not linked yet (404), but the token is taken.
    const before = await fetch(`${base}/api/me/patient`, { headers: { authorization: old } });
    if (before.status !== 404) throw new Error(`pia's token before its revocation: ${before.status}`);
    await revoke.getByLabel('Token id (jti)').fill(jti);
    await revoke.getByRole('button', { name: 'Revoke token' }).click();
    await message(page, `Token ${jti} revoked`);
    const after = await fetch(`${base}/api/me/patient`, { headers: { authorization: old } });
    if (after.status !== 401) throw new Error(`the revoked token still works: ${after.status}`);
    // This session's token from after the rotation (a reload), signed with the new key.
    await page.reload();
    await page.getByRole('heading', { name: 'Tenant administration' }).waitFor();
    await page.getByRole('button', { name: 'Keys and tokens' }).click();
    // The retiring key revoked, after a confirmation saying what that does.
    await page.getByRole('button', { name: `Revoke key ${oldKid}…` }).click();
    await page.getByRole('heading', { name: `Revoke signing key ${oldKid}?` }).waitFor();
    await expectText(page, 'Every token signed with this key is refused at once');
    if (await page.getByText('null', { exact: true }).count()) throw new Error('the confirmation shows "null"');
    await shot(page, 'keys.png');
    await page.getByRole('button', { name: `Yes, revoke key ${oldKid}` }).click();
    await message(page, `Key ${oldKid} revoked`);
    await retiring.getByRole('cell', { name: 'revoked', exact: true }).waitFor();
    // This session's own token (signed with the new key) still works: the list was read again.
    await keys.getByRole('cell', { name: 'ES256', exact: true }).waitFor();
    await finish('keys', page, context);
  }
}

try {
  await run();
} catch (error) {
  console.error(`journey failed: ${error.message}`);
  await lastPage?.screenshot({ path: path.join(shots, 'failure.png'), fullPage: true }).catch(() => {});
  if (problems.length) console.error(problems.join('\n'));
  await browser.close();
  process.exit(1);
}
await browser.close();
