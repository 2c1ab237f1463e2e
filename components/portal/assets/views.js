// Each role's view: what the API lets that role do, one card per task. The API decides every
// access; a refusal is shown as a message, never hidden.

import { call, seg, explain, current } from './api.js';
import { h, field, form, say, card, panel, table, when, action, show } from './ui.js';

// ---------------------------------------------------------------------------------------------
// Shared pieces

const KINDS = ['diagnosis', 'medication', 'allergy', 'procedure', 'note', 'observation', 'history'];

function demographics(patient) {
  if (!patient) return h('p', { class: 'empty' }, 'No demographics.');
  return h('dl', { class: 'facts' },
    h('dt', {}, 'Patient'), h('dd', {}, h('span', { class: 'mono' }, patient.patient_id)),
    h('dt', {}, 'Name'), h('dd', {}, `${patient.given_name} ${patient.family_name}`),
    h('dt', {}, 'Born'), h('dd', {}, patient.birth_date));
}

/** The versions of one entry, newest first, in a region under the record. */
async function historyInto(region, patientId, entryId) {
  region.replaceChildren(h('p', { class: 'muted' }, 'Loading history…'));
  const history = await call('GET', `/api/patients/${seg(patientId)}/records/${seg(entryId)}/history`);
  region.replaceChildren(
    h('h3', {}, `History of ${history.kind} ${history.entry_id}`),
    table(`Versions of ${history.entry_id}, newest first`, [
      ['Version', (v) => String(v.version)],
      ['Content', (v) => v.content],
      ['Author', (v) => h('span', { class: 'mono' }, v.author)],
      ['When', (v) => when(v.created_at)],
      ['Reason for the change', (v) => v.reason || '—'],
    ], history.versions));
  region.querySelector('h3').setAttribute('tabindex', '-1');
  region.querySelector('h3').focus();
}

/**
 * A patient's record entries with their history; `correctable` (the kinds the caller may write)
 * adds a form correcting an entry of those kinds.
 */
function recordCard(patientId, { correctable } = {}) {
  const history = h('div', { 'aria-live': 'polite' });
  const section = card('Record', async (refresh) => {
    const record = await call('GET', `/api/patients/${seg(patientId)}/records`);
    const rows = record.entries || [];
    const columns = [
      ['Kind', (e) => e.kind],
      ['Content', (e) => e.content],
      ['Version', (e) => String(e.version)],
      ['Updated', (e) => when(e.updated_at)],
      ['', (e) => action('History', () => historyInto(history, patientId, e.entry_id), {
        class: 'secondary', 'aria-label': `History of ${e.kind} ${e.entry_id}`,
      })],
    ];
    const parts = [demographics(record.patient), h('h3', {}, 'Entries'), table('Record entries', columns, rows, 'No entries yet.')];
    const mine = correctable ? rows.filter((e) => correctable.includes(e.kind)) : [];
    if (correctable && mine.length === 0) {
      parts.push(h('h3', {}, 'Correct an entry'), h('p', { class: 'empty' }, `No ${correctable.join(' or ')} entry to correct yet.`));
    } else if (correctable) {
      parts.push(h('h3', {}, 'Correct an entry'), form([
        field('Entry', { tag: 'select', name: 'entry_id', required: true, options: mine.map((e) => [e.entry_id, `${e.kind}: ${e.content.slice(0, 40)}`]) }),
        field('Corrected content', { tag: 'textarea', name: 'content', required: true }),
        field('Reason for the correction', { name: 'reason', required: true, maxlength: 1000 }, 'Kept with the earlier version'),
      ], 'Save correction', async (values) => {
        const done = await call('PUT', `/api/patients/${seg(patientId)}/records`, values);
        say(`Entry corrected: version ${done.version} replaces version ${done.from_version}, which is kept.`);
        await refresh();
      }, { 'aria-label': 'Correct an entry' }));
    }
    parts.push(history);
    return parts;
  });
  return section;
}

function labResultsCard(patientId) {
  return card('Lab results', async () => {
    const results = await call('GET', `/api/patients/${seg(patientId)}/lab-results`);
    return table('Lab results', [
      ['Test', (r) => r.code],
      ['Value', (r) => `${r.value} ${r.unit}`],
      ['Note', (r) => r.note || '—'],
      ['Lab', (r) => r.lab],
      ['Resulted', (r) => when(r.resulted_at)],
    ], results.lab_results, 'No lab results yet.');
  });
}

// ---------------------------------------------------------------------------------------------
// Break-glass banner: visible on every view while a grant lasts.

let bannerTimer = null;

function showBanner(patientId, grant) {
  const banner = document.getElementById('banner');
  banner.textContent = `Break-glass access to patient ${patientId} until ${when(grant.expires_at)}. `
    + 'Every access under it is recorded and reviewed.';
  banner.hidden = false;
  clearTimeout(bannerTimer);
  bannerTimer = setTimeout(clearBanner, Math.max(0, grant.expires_at * 1000 - Date.now()));
}

export function clearBanner() {
  clearTimeout(bannerTimer);
  const banner = document.getElementById('banner');
  banner.hidden = true;
  banner.textContent = '';
}

// ---------------------------------------------------------------------------------------------
// Patient

/** The record the patient's account is linked to (`GET /api/me/patient`), opened at once. */
function patientView() {
  const status = h('p', { class: 'muted', 'aria-busy': 'true' }, 'Finding your record…');
  (async () => {
    try {
      const mine = await call('GET', '/api/me/patient');
      // Only if the page still shows this view (not signed out meanwhile).
      if (status.isConnected) show(...patientRecord(mine.patient_id));
    } catch (error) {
      status.removeAttribute('aria-busy');
      status.replaceChildren(error && error.status === 404
        ? 'No record is linked to your account yet. The hospital links it; ask them, then sign in again.'
        : explain(error));
    }
  })();
  return [h('h1', {}, 'My health record'), h('section', { class: 'card' }, status)];
}

function patientRecord(patientId) {
  return [
    h('h1', {}, 'My health record'),
    recordCard(patientId),
    h('div', { class: 'grid' },
      labResultsCard(patientId),
      consentsCard(patientId),
      exportCard(patientId)),
    accessLogCard(patientId),
  ];
}

function consentsCard(patientId) {
  const grant = form([
    field('Insurer', { name: 'insurer', required: true, spellcheck: 'false' }, 'The insurer’s client id, e.g. acme-health'),
    field('Until', { name: 'until', type: 'date', required: true }),
  ], 'Grant consent', async ({ insurer, until }) => {
    const expires = Math.floor(new Date(`${until}T23:59:59`).getTime() / 1000);
    const done = await call('POST', `/api/patients/${seg(patientId)}/consents`, { insurer: insurer.trim(), expires_at: expires });
    say(`Consent granted to ${done.insurer} until ${when(done.expires_at)}.`);
  }, { 'aria-label': 'Grant consent' });
  const withdraw = form([
    field('Insurer', { name: 'insurer', required: true, spellcheck: 'false' }),
  ], 'Withdraw consent', async ({ insurer }) => {
    await call('DELETE', `/api/patients/${seg(patientId)}/consents?insurer=${encodeURIComponent(insurer.trim())}`);
    say(`Consent withdrawn from ${insurer.trim()}.`);
  }, { 'aria-label': 'Withdraw consent' });
  return h('section', { class: 'card', 'aria-labelledby': 'consents-h' },
    h('h2', { id: 'consents-h' }, 'Consents'),
    h('p', { class: 'muted' }, 'An insurer reads your summary only while your consent lasts.'),
    grant, h('h3', {}, 'Withdraw'), withdraw);
}

function accessLogCard(patientId) {
  return card('Who accessed my record', async () => {
    const log = await call('GET', `/api/patients/${seg(patientId)}/access-log?limit=50`);
    return table('Access log, oldest first', [
      ['When', (e) => when(e.time)],
      ['Who', (e) => `${e.actor?.id ?? '—'} (${e.actor?.role ?? '—'})`],
      ['What', (e) => `${e.operation} ${e.data_category}`],
      ['Rule', (e) => e.rule || '—'],
      ['Outcome', (e) => h('span', { class: e.outcome === 'allow' ? 'tag' : 'tag deny' }, e.outcome)],
    ], log.entries, 'Nobody has accessed your record yet.');
  });
}

function exportCard(patientId) {
  const link = h('p', {});
  const button = action('Prepare my data export', async () => {
    const data = await call('GET', `/api/patients/${seg(patientId)}/export`);
    const blob = new Blob([JSON.stringify(data, null, 2)], { type: 'application/json' });
    const url = URL.createObjectURL(blob);
    link.replaceChildren(h('a', { href: url, download: `${patientId}-export.json`, id: 'export-link' }, 'Download my data (JSON)'));
    say('Your export is ready to download.');
    link.querySelector('a').focus();
  });
  return h('section', { class: 'card', 'aria-labelledby': 'export-h' },
    h('h2', { id: 'export-h' }, 'My data'),
    h('p', {}, 'Everything held about you, in one file (GDPR articles 15 and 20).'),
    button, link);
}

// ---------------------------------------------------------------------------------------------
// Doctor

/** A clinician's (doctor, nurse, pharmacist) current care-team patients, each with an Open button. */
function careTeamCard(open) {
  return card('Care team', async () => {
    const mine = await call('GET', '/api/care-team/patients');
    return table('Patients whose care team you are on', [
      ['Patient', (p) => h('span', { class: 'mono' }, p.patient_id)],
      ['Reason', (p) => p.reason],
      ['Since', (p) => when(p.starts_at)],
      ['Until', (p) => (p.ends_at ? when(p.ends_at) : 'until ended')],
      ['', (p) => action('Open', () => open(p.patient_id), { 'aria-label': `Open ${p.patient_id}` })],
    ], mine.patients, 'You are on no care team.');
  });
}

function doctorView() {
  const open = form([
    field('Patient ID', { name: 'patient', required: true, spellcheck: 'false', autocapitalize: 'none' }),
  ], 'Open record', async ({ patient }) => openPatient(patient.trim()), { 'aria-label': 'Open a patient', class: 'inline' });
  return [
    h('h1', {}, 'My patients'),
    careTeamCard(openPatient),
    h('section', { class: 'card', 'aria-labelledby': 'other-h' }, h('h2', { id: 'other-h' }, 'Another patient'), open),
  ];
}

async function openPatient(patientId) {
  try {
    await call('GET', `/api/patients/${seg(patientId)}`);
  } catch (error) {
    if (error.status === 403) return show(...breakGlassPage(patientId));
    throw error;
  }
  show(...doctorRecord(patientId));
}

/**
 * A clinician's page of one patient, the doctor's and the nurse's: the record with a form
 * correcting an entry of the `kinds` the role writes, a form adding one, the lab results, then
 * the role's own cards (`more`: the doctor's lab orders).
 */
function patientPage(patientId, { kinds, addTitle, kindHint, back, more = [] }) {
  const backButton = h('button', { type: 'button', class: 'secondary', onclick: back }, 'Back to my patients');
  const record = recordCard(patientId, { correctable: kinds });
  const add = form([
    field('Kind', { tag: 'select', name: 'kind', required: true, options: kinds.map((k) => [k, k]) }, kindHint),
    field('Content', { tag: 'textarea', name: 'content', required: true }),
  ], 'Add entry', async (values, el) => {
    const done = await call('POST', `/api/patients/${seg(patientId)}/records`, values);
    el.reset();
    say(`Entry ${done.entry_id} added.`);
    await record.refresh();
  }, { 'aria-label': addTitle });
  return [
    h('h1', {}, `Patient ${patientId}`),
    h('p', {}, backButton),
    record,
    h('div', { class: 'grid' }, panel(addTitle, add), labResultsCard(patientId)),
    ...more,
  ];
}

function doctorRecord(patientId) {
  return patientPage(patientId, {
    kinds: KINDS,
    addTitle: 'Add an entry',
    back: () => show(...doctorView()),
    more: [labOrdersPanel(patientId)],
  });
}

/** The patient's lab orders and a form ordering a test (the doctor's). */
function labOrdersPanel(patientId) {
  const orders = labOrdersCard(patientId);
  const order = form([
    field('Lab', { name: 'lab_id', required: true, spellcheck: 'false', autocapitalize: 'none' }, 'The lab’s id, e.g. lab-north'),
    field('Test code', { name: 'test_code', required: true, spellcheck: 'false' }, 'e.g. the LOINC code 4548-4'),
    field('Test name', { name: 'test_name' }, 'Optional'),
    field('Note to the lab', { tag: 'textarea', name: 'note' }, 'Optional'),
  ], 'Order test', async (values, el) => {
    const body = { lab_id: values.lab_id.trim(), test_code: values.test_code.trim() };
    if (values.test_name.trim()) body.test_name = values.test_name.trim();
    if (values.note.trim()) body.note = values.note;
    const done = await call('POST', `/api/patients/${seg(patientId)}/lab-orders`, body);
    el.reset();
    say(`Order ${done.order_id} sent to ${done.lab_id}.`);
    await orders.refresh();
  }, { 'aria-label': 'Order a lab test' });
  return h('div', { class: 'grid' }, panel('Order a lab test', order), orders);
}

function labOrdersCard(patientId) {
  return card('Lab orders', async () => {
    const list = await call('GET', `/api/patients/${seg(patientId)}/lab-orders`);
    return table('Lab orders of this patient', [
      ['Order', (o) => h('span', { class: 'mono' }, o.order_id)],
      ['Test', (o) => (o.test_name ? `${o.test_name} (${o.test_code})` : o.test_code)],
      ['Lab', (o) => o.lab_id],
      ['Ordered', (o) => when(o.ordered_at)],
      ['Status', (o) => o.status],
      ['Note', (o) => o.note || '—'],
    ], list.lab_orders, 'No lab orders yet.');
  });
}

function breakGlassPage(patientId) {
  const back = h('button', { type: 'button', class: 'secondary', onclick: () => show(...doctorView()) }, 'Back to my patients');
  const request = form([
    field('Reason', { tag: 'textarea', name: 'reason', required: true, minlength: 10, maxlength: 1000 },
      'Why you need this record now (at least 10 characters). It is reviewed.'),
  ], 'Break the glass', async ({ reason }) => {
    const grant = await call('POST', `/api/patients/${seg(patientId)}/break-glass`, { reason: reason.trim() });
    showBanner(patientId, grant);
    show(...doctorRecord(patientId));
  }, { 'aria-label': 'Break-glass access' });
  return [
    h('h1', {}, `Patient ${patientId}`),
    h('p', {}, back),
    h('section', { class: 'card', 'aria-labelledby': 'bg-h' },
      h('h2', { id: 'bg-h' }, 'You are not on this patient’s care team'),
      h('p', {}, 'In an emergency you may open the record anyway. The access is time-limited, and it and every read under it are flagged for review by the tenant admin.'),
      request),
  ];
}

// ---------------------------------------------------------------------------------------------
// Nurse: care-team patients' records and lab results; adds and corrects notes and observations
// (vital signs), the only kinds the API lets a nurse write.

const NURSE_KINDS = ['note', 'observation'];

function nurseView() {
  return [h('h1', {}, 'My patients'), careTeamCard((id) => show(...nurseRecord(id)))];
}

function nurseRecord(patientId) {
  return patientPage(patientId, {
    kinds: NURSE_KINDS,
    addTitle: 'Add a note or observation',
    kindHint: 'A note, or an observation such as vital signs',
    back: () => show(...nurseView()),
  });
}

// ---------------------------------------------------------------------------------------------
// Pharmacist: care-team patients' medication and allergies (the API leaves every other entry out).

function pharmacistView() {
  return [h('h1', {}, 'My patients'), careTeamCard((id) => show(...pharmacistRecord(id)))];
}

function pharmacistRecord(patientId) {
  const back = h('button', { type: 'button', class: 'secondary', onclick: () => show(...pharmacistView()) }, 'Back to my patients');
  return [
    h('h1', {}, `Patient ${patientId}`),
    h('p', {}, back),
    h('p', { class: 'muted' }, 'A pharmacist sees the medication and allergy entries of the record.'),
    recordCard(patientId),
  ];
}

// ---------------------------------------------------------------------------------------------
// Receptionist: registers patients, edits their demographics, admits them to a care team.

function receptionView() {
  const edit = h('div', { 'aria-live': 'polite' });
  const find = form([
    field('Patient ID', { name: 'patient', required: true, spellcheck: 'false', autocapitalize: 'none' }),
  ], 'Look up', async ({ patient }) => {
    const found = await call('GET', `/api/patients/${seg(patient.trim())}`);
    demographicsForm(edit, found.patient);
  }, { 'aria-label': 'Look up a patient', class: 'inline' });
  return [
    h('h1', {}, 'Reception'),
    h('div', { class: 'grid' },
      h('section', { class: 'card', 'aria-labelledby': 'rreg-h' }, h('h2', { id: 'rreg-h' }, 'Register a patient'), registerForm()),
      h('section', { class: 'card', 'aria-labelledby': 'rct-h' }, h('h2', { id: 'rct-h' }, 'Admit to a care team'), admitForm())),
    h('section', { class: 'card', 'aria-labelledby': 'rfind-h' }, h('h2', { id: 'rfind-h' }, 'A patient’s details'), find, edit),
  ];
}

function demographicsForm(region, patient) {
  const id = patient.patient_id;
  const el = form([
    field('Given name', { name: 'given_name', required: true, value: patient.given_name }),
    field('Family name', { name: 'family_name', required: true, value: patient.family_name }),
    field('Birth date', { name: 'birth_date', type: 'date', required: true, value: patient.birth_date }),
  ], 'Save details', async (values) => {
    await call('PUT', `/api/patients/${seg(id)}`, values);
    say(`Details of ${id} saved.`);
  }, { 'aria-label': `Details of ${id}` });
  region.replaceChildren(h('h3', { tabindex: '-1' }, `Details of ${id}`), el);
  region.querySelector('h3').focus();
}

// ---------------------------------------------------------------------------------------------
// Lab

function labView() {
  const queue = card('Open orders', async (refresh) => {
    const orders = await call('GET', '/api/lab/orders');
    const entry = h('div', { 'aria-live': 'polite' });
    return [table('Orders waiting for a result', [
      ['Order', (o) => h('span', { class: 'mono' }, o.order_id)],
      ['Patient', (o) => h('span', { class: 'mono' }, o.patient_id)],
      ['Test', (o) => `${o.test_name} (${o.test_code})`],
      ['Ordered', (o) => when(o.ordered_at)],
      ['', (o) => action('Enter result', () => resultForm(entry, o, refresh), { 'aria-label': `Enter result for ${o.order_id}` })],
    ], orders.orders, 'No open orders.'), entry];
  });
  return [h('h1', {}, 'Lab orders'), queue];
}

function resultForm(region, order, refresh) {
  const el = form([
    field('Code', { name: 'code', required: true, value: order.test_code }),
    field('Value', { name: 'value', required: true }),
    field('Unit', { name: 'unit', required: true }),
    field('Note', { name: 'note' }, 'Optional'),
  ], 'Send result', async (values) => {
    const body = { code: values.code, value: values.value, unit: values.unit };
    if (values.note) body.note = values.note;
    await call('POST', `/api/lab/orders/${seg(order.order_id)}/results`, body);
    say(`Result for ${order.order_id} sent; the order is closed.`);
    await refresh();
  }, { 'aria-label': `Result for ${order.order_id}` });
  region.replaceChildren(h('h3', { tabindex: '-1' }, `Result for order ${order.order_id}`), el);
  region.querySelector('h3').focus();
}

// ---------------------------------------------------------------------------------------------
// Tenant admin

const ROLES = ['patient', 'doctor', 'nurse', 'pharmacist', 'receptionist', 'lab', 'insurance', 'admin'];
const CARE_REASONS = ['encounter', 'referral', 'admission', 'consultation', 'primary-care', 'other'];

/**
 * A tenant's users (`/auth/admin/users`): the list, a form creating one and one linking a user to
 * their identity at the tenant's OpenID provider. `tenant`: the operator's chosen tenant (named
 * in each call, as the operator must); none for the tenant admin, whose token names theirs.
 */
function usersCard(tenant) {
  const query = tenant ? `?tenant_id=${encodeURIComponent(tenant)}` : '';
  const named = tenant ? { tenant_id: tenant } : {};
  // The operator's usual errand is a new tenant's first admin: that role comes first.
  const roles = tenant ? ['admin', ...ROLES.filter((r) => r !== 'admin')] : ROLES;
  // Disabling a user and resetting their TOTP end every session of theirs (auth).
  const userActions = (u) => h('span', { class: 'row' },
    action(u.disabled ? 'Enable' : 'Disable', async () => {
      await call('POST', `/auth/admin/users/${seg(u.id)}/${u.disabled ? 'enable' : 'disable'}`, named);
      say(u.disabled ? `${u.username} is enabled again.` : `${u.username} is disabled: their sessions have ended.`);
      await users.refresh();
    }, { class: 'secondary', 'aria-label': `${u.disabled ? 'Enable' : 'Disable'} ${u.username}` }),
    u.mfa_enrolled ? action('Reset TOTP', async () => {
      await call('POST', `/auth/admin/users/${seg(u.id)}/reset-mfa`, named);
      say(`${u.username}’s authenticator is reset: they enrol again at their next sign-in.`);
      await users.refresh();
    }, { class: 'secondary', 'aria-label': `Reset TOTP of ${u.username}` }) : null);
  const resetPassword = (list) => form([
    field('User', { tag: 'select', name: 'user', required: true, options: list.users.map((u) => [u.id, `${u.username} (${u.role})`]) }),
    field('New password', { name: 'password', type: 'password', autocomplete: 'new-password', minlength: 12, required: true },
      'At least 12 characters; give it to the user by a separate channel'),
  ], 'Reset password', async ({ user, password }, el) => {
    await call('POST', `/auth/admin/users/${seg(user)}/reset-password`, { ...named, password });
    el.reset();
    say(`${list.users.find((u) => u.id === user)?.username ?? user}’s password is reset: their sessions have ended.`);
  }, { 'aria-label': 'Reset a password' });
  const users = card('Users', async (refresh) => {
    const list = await call('GET', `/auth/admin/users${query}`);
    const create = form([
      field('Username', { name: 'username', required: true, spellcheck: 'false', autocapitalize: 'none' }),
      field('Role', { tag: 'select', name: 'role', required: true, options: roles.map((r) => [r, r]) }),
      field('Initial password', { name: 'password', type: 'password', autocomplete: 'new-password', minlength: 12, required: true }),
    ], 'Create user', async (values) => {
      const made = await call('POST', '/auth/admin/users', { ...named, ...values });
      say(`User ${values.username} created (${made.id ?? made.user_id ?? 'id in the list'}).`);
      await refresh();
    }, { 'aria-label': 'Create a user' });
    const link = form([
      field('User', { tag: 'select', name: 'user', required: true, options: list.users.map((u) => [u.id, `${u.username} (${u.role})`]) }),
      field('Identity at the provider', { name: 'external_id', required: true, spellcheck: 'false', autocapitalize: 'none' },
        'The value of the provider’s subject claim for this person, by default their email'),
    ], 'Link identity', async ({ user, external_id: externalId }) => {
      await call('POST', `/auth/admin/users/${seg(user)}/link`, { ...named, external_id: externalId.trim() });
      say(`Linked: ${externalId.trim()} signs in as ${list.users.find((u) => u.id === user)?.username ?? user}.`);
      await refresh();
    }, { 'aria-label': 'Link a provider identity' });
    return [table('Users of this tenant', [
      ['Username', (u) => u.username],
      ['Id', (u) => h('span', { class: 'mono' }, u.id)],
      ['Role', (u) => u.role],
      ['TOTP', (u) => (u.mfa_enrolled ? 'enrolled' : '—')],
      ['Status', (u) => (u.disabled ? 'disabled' : 'active')],
      ['Provider identity', (u) => u.external_id || '—'],
      ['', (u) => userActions(u)],
    ], list.users, 'No users yet.'), h('h3', {}, 'Create a user'), create,
    ...(list.users.length ? [h('h3', {}, 'Link a provider identity'), link, h('h3', {}, 'Reset a password'), resetPassword(list)] : [])];
  });
  return users;
}

function adminView(session) {
  const users = usersCard();
  const careEnd = form([
    field('Patient ID', { name: 'patient', required: true, spellcheck: 'false' }),
    field('Clinician (user id)', { name: 'member', required: true, spellcheck: 'false' }),
  ], 'End membership', async ({ patient, member }) => {
    await call('DELETE', `/api/patients/${seg(patient)}/care-team/${seg(member)}`);
    say(`${member.trim()} is no longer on ${patient.trim()}’s care team.`);
  }, { 'aria-label': 'End a care-team membership' });
  const chain = h('p', { 'aria-live': 'polite', id: 'chain-result' });
  const check = action('Check the audit chain', async () => {
    const result = await call('GET', '/api/admin/audit/verify');
    chain.textContent = result.intact
      ? `Intact: ${result.events} events, every link verified.`
      : `BROKEN at event ${result.broken_at} (of ${result.events}). Investigate at once.`;
  });
  const alerts = card('Alerts', async (refresh) => {
    const list = await call('GET', '/api/admin/alerts?status=open');
    return table('Open alerts, oldest first', [
      ['Rule', (a) => a.rule],
      ['Subject', (a) => h('span', { class: 'mono' }, a.subject)],
      ['Count', (a) => String(a.count)],
      ['Last', (a) => when(a.last_event_at)],
      ['', (a) => action('Acknowledge', async () => {
        await call('POST', `/api/admin/alerts/${seg(a.id)}/acknowledge`);
        say(`Alert ${a.id} acknowledged.`);
        await refresh();
      }, { 'aria-label': `Acknowledge alert ${a.id}` })],
    ], list.alerts, 'No open alerts.');
  });
  const review = card('Break-glass review', async () => {
    const page = await call('GET', '/api/admin/break-glass?limit=100');
    return table('Break-glass grants and the accesses they allowed', [
      ['When', (e) => when(e.event.time)],
      ['Who', (e) => h('span', { class: 'mono' }, e.event.actor_sub || '—')],
      ['Patient', (e) => h('span', { class: 'mono' }, e.event.patient_id || '—')],
      ['What', (e) => e.event.action],
      ['Stated reason', (e) => e.event.break_glass_reason || '—'],
      ['Outcome', (e) => h('span', { class: e.event.outcome === 'allow' ? 'tag' : 'tag deny' }, e.event.outcome || '—')],
    ], page.events, 'No break-glass access to review.');
  });
  const pages = h('p', { class: 'row' },
    h('button', { type: 'button', class: 'secondary', onclick: () => show(...adminPage('Keys and tokens', keysCard(session.tenant))) },
      'Keys and tokens'),
    h('button', { type: 'button', class: 'secondary', onclick: () => show(...adminPage('OpenID provider', federationCard())) },
      'OpenID provider'),
    h('button', { type: 'button', class: 'secondary', onclick: () => show(...adminPage('Labs, accounts and erasure', labsCard(), patientAdminCards())) },
      'Labs, accounts and erasure'),
    h('button', { type: 'button', class: 'secondary', onclick: () => show(...adminPage('Insurer clients', clientsCard())) },
      'Insurer clients'));
  return [
    h('h1', {}, 'Tenant administration'),
    pages,
    users,
    h('div', { class: 'grid' },
      h('section', { class: 'card', 'aria-labelledby': 'reg-h' }, h('h2', { id: 'reg-h' }, 'Register a patient'), registerForm()),
      h('section', { class: 'card', 'aria-labelledby': 'ct-h' }, h('h2', { id: 'ct-h' }, 'Care teams'), admitForm(),
        h('h3', {}, 'End a membership'), careEnd),
      h('section', { class: 'card', 'aria-labelledby': 'au-h' }, h('h2', { id: 'au-h' }, 'Audit'),
        h('p', {}, 'Every access is in a hash chain; a changed or removed event breaks it.'), check, chain)),
    auditSearch(),
    alerts,
    review,
  ];
}

const OUTCOMES = [['', 'any'], ['allow', 'allow'], ['deny', 'deny'], ['error', 'error']];

/** The audit filters of the search form as a query string (dates as whole days, local time). */
function auditQuery(values) {
  const query = new URLSearchParams();
  if (values.from) query.set('from', String(Math.floor(new Date(`${values.from}T00:00:00`).getTime() / 1000)));
  if (values.to) query.set('to', String(Math.floor(new Date(`${values.to}T23:59:59`).getTime() / 1000)));
  for (const name of ['actor', 'patient', 'outcome']) if (values[name].trim()) query.set(name, values[name].trim());
  return query;
}

/** Searches the tenant's audit events (`GET /api/admin/audit`), page by page, and exports them as NDJSON. */
function auditSearch() {
  const results = h('div', { 'aria-live': 'polite' });
  const link = h('p', {});
  const columns = [
    ['Seq', (e) => String(e.seq)],
    ['When', (e) => when(e.event.time)],
    ['Who', (e) => h('span', { class: 'mono' }, e.event.actor_sub ? `${e.event.actor_sub} (${e.event.actor_role || '—'})` : '—')],
    ['What', (e) => e.event.action],
    ['Patient', (e) => h('span', { class: 'mono' }, e.event.patient_id || '—')],
    ['Outcome', (e) => h('span', { class: e.event.outcome === 'allow' ? 'tag' : 'tag deny' }, e.event.outcome || '—')],
    ['Reason', (e) => e.event.reason || '—'],
    ['Token (jti)', (e) => h('span', { class: 'mono' }, e.event.jti || '—')],
  ];
  const search = form([
    field('From', { name: 'from', type: 'date' }, 'Optional'),
    field('To', { name: 'to', type: 'date' }, 'Optional, the whole day included'),
    field('Actor (user id)', { name: 'actor', spellcheck: 'false' }, 'Optional'),
    field('Patient ID', { name: 'patient', spellcheck: 'false' }, 'Optional'),
    field('Outcome', { tag: 'select', name: 'outcome', options: OUTCOMES }),
  ], 'Search', async (values) => {
    const query = auditQuery(values);
    query.set('limit', '50');
    const rows = [];
    const page = async (after) => {
      if (after !== undefined) query.set('after', String(after));
      const found = await call('GET', `/api/admin/audit?${query}`);
      rows.push(...found.events);
      const more = found.next_after !== null && found.next_after !== undefined && found.events.length > 0
        ? action('More events', () => page(found.next_after), { class: 'secondary' }) : null;
      results.replaceChildren(h('p', {}, `${rows.length} event${rows.length === 1 ? '' : 's'} shown.`),
        table('Audit events, oldest first', columns, rows, 'No event matches.'), more);
    };
    await page();
  }, { 'aria-label': 'Search the audit log' });
  const exporter = action('Prepare the export', async () => {
    const query = auditQuery(Object.fromEntries(new FormData(search).entries()));
    const text = await call('GET', `/api/admin/audit/export?${query}`);
    const url = URL.createObjectURL(new Blob([text], { type: 'application/x-ndjson' }));
    const lines = text.split('\n').filter((l) => l.trim()).length;
    link.replaceChildren(h('a', { href: url, download: 'audit-export.ndjson', id: 'audit-export-link' },
      `Download the audit export (NDJSON, ${lines} event${lines === 1 ? '' : 's'})`));
    say('The audit export is ready to download.');
    link.querySelector('a').focus();
  });
  return h('section', { class: 'card', 'aria-labelledby': 'as-h' },
    h('h2', { id: 'as-h' }, 'Audit search'),
    h('p', { class: 'muted' }, 'Every decision of the tenant, filtered; the export holds the same events, one JSON object a line (redacted when the platform runs with strict audit redaction).'),
    search, h('p', {}, exporter), link, results);
}

/** Registers a patient (the tenant admin, a receptionist). */
function registerForm() {
  return form([
    field('Patient ID', { name: 'patient_id', spellcheck: 'false' }, 'Optional: the platform makes one'),
    field('Given name', { name: 'given_name', required: true }),
    field('Family name', { name: 'family_name', required: true }),
    field('Birth date', { name: 'birth_date', type: 'date', required: true }),
  ], 'Register patient', async (values, el) => {
    const body = { given_name: values.given_name, family_name: values.family_name, birth_date: values.birth_date };
    if (values.patient_id.trim()) body.patient_id = values.patient_id.trim();
    const done = await call('POST', '/api/admin/patients', body);
    el.reset();
    say(`Patient ${done.patient_id} registered.`);
  }, { 'aria-label': 'Register a patient' });
}

/** Puts a doctor, nurse or pharmacist on a patient's care team (the tenant admin, a receptionist). */
function admitForm() {
  return form([
    field('Patient ID', { name: 'patient', required: true, spellcheck: 'false' }),
    field('Clinician (user id)', { name: 'member', required: true, spellcheck: 'false' }, 'A doctor’s, nurse’s or pharmacist’s u-… id'),
    field('Reason', { tag: 'select', name: 'reason', required: true, options: CARE_REASONS.map((r) => [r, r]) }),
  ], 'Add to care team', async ({ patient, member, reason }) => {
    await call('POST', `/api/patients/${seg(patient)}/care-team/${seg(member)}`, { reason });
    say(`${member.trim()} is on ${patient.trim()}’s care team.`);
  }, { 'aria-label': 'Add to a care team' });
}

/** The tenant's lab organisations (`/api/admin/labs`): list, register, attach and detach a lab user. */
function labsCard() {
  return card('Lab organisations', async (refresh) => {
    const { labs } = await call('GET', '/api/admin/labs');
    const register = form([
      field('Lab id', { name: 'lab_id', required: true, spellcheck: 'false', autocapitalize: 'none' }, 'e.g. lab-east'),
      field('Name', { name: 'name', required: true, maxlength: 128 }),
    ], 'Register lab', async ({ lab_id: labId, name }) => {
      const done = await call('POST', '/api/admin/labs', { lab_id: labId.trim(), name: name.trim() });
      say(done.registered === false ? `Lab ${done.lab_id} was already registered.` : `Lab ${done.lab_id} registered.`);
      await refresh();
    }, { 'aria-label': 'Register a lab' });
    const member = form([
      field('Lab', { tag: 'select', name: 'lab', required: true, options: labs.map((l) => [l.lab_id, `${l.name} (${l.lab_id})`]) }),
      field('Lab user (user id)', { name: 'user', required: true, spellcheck: 'false', autocapitalize: 'none' }),
    ], 'Attach user', async ({ lab, user }) => {
      await call('PUT', `/api/admin/labs/${seg(lab)}/members/${seg(user.trim())}`);
      say(`${user.trim()} is a member of ${lab}: they see and result its orders.`);
      await refresh();
    }, { 'aria-label': 'Attach a lab user' });
    const detach = (l, u) => action('Detach', async () => {
      await call('DELETE', `/api/admin/labs/${seg(l.lab_id)}/members/${seg(u)}`);
      say(`${u} is no longer a member of ${l.lab_id}.`);
      await refresh();
    }, { class: 'secondary', 'aria-label': `Detach ${u} from ${l.lab_id}` });
    return [table('Lab organisations of this tenant', [
      ['Lab id', (l) => h('span', { class: 'mono' }, l.lab_id)],
      ['Name', (l) => l.name],
      ['Registered', (l) => when(l.registered_at)],
      ['Members', (l) => (l.members.length ? h('ul', {}, l.members.map((u) => h('li', {}, h('span', { class: 'mono' }, u), ' ', detach(l, u)))) : '—')],
    ], labs, 'No lab organisations yet.'), h('h3', {}, 'Register a lab'), register,
    ...(labs.length ? [h('h3', {}, 'Attach a lab user'), member] : [])];
  });
}

/** Linking a patient account to its record, erasure (after a typed confirmation), data-key rotation. */
function patientAdminCards() {
  const link = form([
    field('Patient ID', { name: 'patient', required: true, spellcheck: 'false' }),
    field('Patient account (user id)', { name: 'user_id', required: true, spellcheck: 'false', autocapitalize: 'none' }),
  ], 'Link account', async ({ patient, user_id: userId }) => {
    const done = await call('PUT', `/api/admin/patients/${seg(patient.trim())}/account`, { user_id: userId.trim() });
    say(done.changed === false ? `${done.user_id} was already linked to ${done.patient_id}.`
      : `Linked: ${done.user_id} now reads record ${done.patient_id} and no other.`);
  }, { 'aria-label': 'Link a patient account' });

  const confirmation = h('div', { 'aria-live': 'polite' });
  const erase = form([
    field('Patient ID', { name: 'patient', required: true, spellcheck: 'false' }),
  ], 'Erase…', async ({ patient }) => confirmErase(patient.trim()), { 'aria-label': 'Erase a patient' });
  function confirmErase(patient) {
    const typed = field('Type the patient ID to confirm', { name: 'confirm', required: true, spellcheck: 'false', autocomplete: 'off' });
    const yes = action(`Erase ${patient} for good`, async () => {
      if (typed.querySelector('input').value.trim() !== patient) return say('The ID typed does not match: nothing erased.', 'error');
      const done = await call('DELETE', `/api/admin/patients/${seg(patient)}`);
      confirmation.replaceChildren();
      erase.reset();
      say(`Patient ${patient} erased: their keys are destroyed and the record can no longer be read.${done.account_disabled ? ' Their account is disabled.' : ''}`);
      return undefined;
    }, { class: 'danger' });
    const cancel = h('button', { type: 'button', class: 'secondary', onclick: () => confirmation.replaceChildren() }, 'Cancel');
    confirmation.replaceChildren(
      h('h3', { tabindex: '-1' }, `Erase patient ${patient}?`),
      h('p', {}, 'Their data keys are destroyed: every entry, result and consent of the record becomes unreadable for good, and later reads find nothing. Consents are withdrawn. The patient account linked to the record is disabled and its sessions end.'),
      h('p', {}, 'An erasure cannot be undone.'),
      typed,
      h('p', { class: 'row' }, yes, cancel));
    confirmation.querySelector('h3').focus();
  }

  const rotated = h('p', { 'aria-live': 'polite' });
  const rotate = action('Rotate the data key', async () => {
    const done = await call('POST', '/api/admin/data-keys/rotate');
    rotated.textContent = `New data key ${done.data_key_id} encrypts new writes; older rows stay readable.`;
    say(`Data key rotated: ${done.data_key_id}.`);
  });
  return [h('div', { class: 'grid' },
    panel('Link a patient account', h('p', { class: 'muted' }, 'The account then reads this record and no other.'), link),
    panel('Data key', h('p', { class: 'muted' }, 'A new tenant data key for new writes.'), rotate, rotated)),
  panel('Erase a patient', h('p', { class: 'muted' }, 'Crypto-shredding: asks for confirmation first.'), erase, confirmation)];
}

/** Insurer clients (`/auth/admin/clients`): list, register (the secret shown once), disable and enable. */
function clientsCard() {
  const secret = h('div', { 'aria-live': 'polite' });
  const list = card('Insurer clients', async (refresh) => {
    const { clients } = await call('GET', '/auth/admin/clients');
    return table('Insurer clients of this tenant', [
      ['Name', (c) => c.name],
      ['Client id', (c) => h('span', { class: 'mono' }, c.client_id)],
      ['Authentication', (c) => c.token_endpoint_auth_method],
      ['Status', (c) => (c.disabled ? 'disabled' : 'active')],
      ['', (c) => action(c.disabled ? 'Enable' : 'Disable', async () => {
        await call('POST', `/auth/admin/clients/${seg(c.client_id)}/${c.disabled ? 'enable' : 'disable'}`);
        say(c.disabled ? `${c.name} is enabled again.` : `${c.name} is disabled: it gets no more tokens.`);
        await refresh();
      }, { class: 'secondary', 'aria-label': `${c.disabled ? 'Enable' : 'Disable'} ${c.name}` })],
    ], clients, 'No insurer clients yet.');
  });
  const parse = (text, what) => {
    try { return JSON.parse(text); } catch { throw new Error(`The ${what} is not valid JSON.`); }
  };
  const register = form([
    field('Name', { name: 'name', required: true }),
    field('Encryption public JWK', { tag: 'textarea', name: 'enc_jwk', required: true, rows: 5, spellcheck: 'false' },
      'The insurer’s public key (JSON) its tokens are encrypted to; no private members'),
    field('Signing public JWK', { tag: 'textarea', name: 'sig_jwk', rows: 5, spellcheck: 'false' },
      'Optional: with it the client authenticates by a signed JWT (private_key_jwt), without it by a secret'),
  ], 'Register client', async (values, el) => {
    const body = { name: values.name.trim(), enc_jwk: parse(values.enc_jwk, 'encryption JWK') };
    if (values.sig_jwk.trim()) body.sig_jwk = parse(values.sig_jwk, 'signing JWK');
    const done = await call('POST', '/auth/admin/clients', body);
    el.reset();
    secret.replaceChildren(...[
      h('h3', {}, `Client ${body.name} registered`),
      h('p', {}, 'Client id: ', h('span', { class: 'mono', id: 'new-client-id' }, done.client_id)),
      done.client_secret ? h('p', {}, 'Client secret (shown this once only; give it to the insurer now): ',
        h('span', { class: 'mono', id: 'new-client-secret' }, done.client_secret)) : null].filter(Boolean));
    say(`Insurer client ${body.name} registered.`);
    await list.refresh();
  }, { 'aria-label': 'Register an insurer client' });
  return [list, panel('Register an insurer client', register, secret)];
}

/** One of the tenant admin's further pages: its heading, the way back, its cards. */
function adminPage(title, ...cards) {
  const back = h('button', { type: 'button', class: 'secondary', onclick: () => show(...viewFor(current())) }, 'Back to administration');
  return [h('h1', {}, title), h('p', {}, back), ...cards.flat()];
}

// ---------------------------------------------------------------------------------------------
// Keys and tokens (jwks `/admin/...`): the tenant admin's own tenant, the operator's chosen one.

const ALGORITHMS = {
  sig: [['', 'the current key’s'], ['RS256', 'RS256'], ['ES256', 'ES256'], ['EdDSA', 'EdDSA']],
  enc: [['', 'the current key’s'], ['ECDH-ES+A256KW', 'ECDH-ES+A256KW'], ['RSA-OAEP-256', 'RSA-OAEP-256']],
};
const USES = { sig: 'signing', enc: 'encryption' };

/** The tenant's keys with rotation, revocation of a key (after a confirmation) and of a token. */
function keysCard(tenant) {
  const confirmation = h('div', { 'aria-live': 'polite' });
  const list = card(`Keys of ${tenant}`, async () => {
    const keys = await call('GET', `/admin/keys/${seg(tenant)}`);
    confirmation.replaceChildren();
    return table(`Signing and encryption keys of ${tenant}, no private material`, [
      ['Key id (kid)', (k) => h('span', { class: 'mono' }, k.kid)],
      ['Use', (k) => USES[k.use] || k.use],
      ['Algorithm', (k) => k.alg],
      ['Status', (k) => h('span', { class: k.status === 'revoked' ? 'tag deny' : 'tag' }, k.status)],
      ['Created', (k) => when(k.created_at)],
      ['Verifies until', (k) => (k.not_after ? when(k.not_after) : '—')],
      ['', (k) => (k.status === 'active' || k.status === 'retiring'
        ? action('Revoke…', async () => confirmRevoke(k), { class: 'danger', 'aria-label': `Revoke key ${k.kid}…` }) : '—')],
    ], keys.keys, 'No keys.');
  });

  /** What revoking `key` does, said before it is done; the revocation only from here. */
  function confirmRevoke(key) {
    const revoke = action(`Yes, revoke key ${key.kid}`, async () => {
      const done = await call('POST', '/admin/revoke-key', { tenant_id: tenant, kid: key.kid });
      say(`Key ${done.kid} revoked: every token with it is refused.${done.replaced_by ? ` Key ${done.replaced_by} replaces it.` : ''}`);
      await list.refresh();
    }, { class: 'danger' });
    const cancel = h('button', { type: 'button', class: 'secondary', onclick: () => confirmation.replaceChildren() }, 'Cancel');
    const active = key.status === 'active';
    confirmation.replaceChildren(...[
      h('h3', { tabindex: '-1' }, `Revoke ${USES[key.use] || key.use} key ${key.kid}?`),
      h('p', {}, key.use === 'sig'
        ? 'Every token signed with this key is refused at once, on every service: everyone signed in with one (you too, if yours is) must sign in again.'
        : 'Every token encrypted to this key can no longer be decrypted, at once: the insurers’ tokens made with it stop working.'),
      active ? h('p', {}, 'It is the active key: a new random key takes its place in the same step, so sign-ins go on.') : null,
      h('p', {}, 'A revocation cannot be undone.'),
      h('p', { class: 'row' }, revoke, cancel)].filter(Boolean));
    confirmation.querySelector('h3').focus();
  }

  const rotate = form([
    field('Use', { tag: 'select', name: 'use', required: true, options: Object.entries(USES) }),
    field('Algorithm', { tag: 'select', name: 'alg', options: ALGORITHMS.sig }, 'Of the new key'),
  ], 'Rotate key', async (values) => {
    const body = { tenant_id: tenant, use: values.use };
    if (values.alg) body.alg = values.alg;
    const done = await call('POST', '/admin/rotate-key', body);
    say(`New ${USES[values.use]} key ${done.kid} is active; the one before it is retiring (it still verifies what it signed until those tokens expire).`);
    await list.refresh();
  }, { 'aria-label': 'Rotate a key' });
  rotate.elements.use.addEventListener('change', () => {
    rotate.elements.alg.replaceChildren(...ALGORITHMS[rotate.elements.use.value].map(([value, text]) => h('option', { value }, text)));
  });

  const token = form([
    field('Token id (jti)', { name: 'jti', required: true, spellcheck: 'false', autocapitalize: 'none' },
      'The jti of the token: the audit search shows it for each request'),
  ], 'Revoke token', async ({ jti }, el) => {
    try {
      const done = await call('POST', '/admin/revoke-token', { tenant_id: tenant, jti: jti.trim() });
      el.reset();
      say(`Token ${jti.trim()} revoked: refused from now on (it would have expired ${when(done.until)}).`);
    } catch (error) {
      if (error.status === 404) return say(`No token with this jti was issued in ${tenant}: nothing revoked.`, 'error');
      throw error;
    }
    return undefined;
  }, { 'aria-label': 'Revoke a token' });

  return [
    list,
    confirmation,
    h('div', { class: 'grid' },
      panel('Rotate a key', h('p', { class: 'muted' }, 'A new key signs (or is encrypted to) from now on; the old one keeps verifying the tokens it signed until they expire.'), rotate),
      panel('Revoke a token', h('p', { class: 'muted' }, 'One token refused at once, whatever its expiry.'), token)),
  ];
}

// ---------------------------------------------------------------------------------------------
// The tenant's OpenID provider (`/auth/admin/federation`): the tenant admin's, or the operator's
// for a chosen tenant.

function federationCard(tenant) {
  const query = tenant ? `?tenant_id=${encodeURIComponent(tenant)}` : '';
  const named = tenant ? { tenant_id: tenant } : {};
  return card('OpenID provider', async (refresh) => {
    const shown = await call('GET', `/auth/admin/federation${query}`);
    const existing = shown.federation;
    const callback = `${window.location.origin}/auth/federation/${encodeURIComponent(shown.tenant_id)}/callback`;
    const facts = existing
      ? h('dl', { class: 'facts' },
        h('dt', {}, 'Status'), h('dd', {}, existing.enabled ? (existing.required ? 'on; passwords refused' : 'on') : 'off'),
        h('dt', {}, 'Issuer'), h('dd', { class: 'mono' }, existing.issuer),
        h('dt', {}, 'Audience (client id)'), h('dd', { class: 'mono' }, existing.audience),
        h('dt', {}, 'Keys from'), h('dd', { class: 'mono' }, existing.discovery_url || existing.jwks_uri),
        h('dt', {}, 'Subject claim'), h('dd', {}, existing.subject_claim),
        h('dt', {}, 'MFA at the provider for'), h('dd', {}, existing.mfa_roles.length ? existing.mfa_roles.join(', ') : 'no role'),
        h('dt', {}, 'Provider access tokens'), h('dd', {}, existing.accept_provider_tokens ? 'accepted' : 'not accepted'),
        existing.break_glass ? [h('dt', {}, 'Break-glass admin'), h('dd', {}, existing.break_glass)] : null)
      : h('p', { class: 'empty' }, 'No OpenID provider is set: people sign in with their passwords.');
    const set = form([
      field('Issuer', { name: 'issuer', type: 'url', required: true, spellcheck: 'false', value: existing?.issuer }, 'The provider’s iss, exactly'),
      field('Audience (client id)', { name: 'audience', required: true, spellcheck: 'false', value: existing?.audience }),
      field('Discovery URL', { name: 'discovery_url', type: 'url', required: true, spellcheck: 'false', value: existing?.discovery_url },
        'Its /.well-known/openid-configuration'),
      field('Subject claim', { name: 'subject_claim', spellcheck: 'false', value: existing?.subject_claim ?? 'email' },
        'The claim matched against the users’ linked identities'),
      field('Roles needing MFA at the provider', { name: 'mfa_roles', spellcheck: 'false', value: existing?.mfa_roles?.join(', ') },
        'Comma-separated, e.g. doctor, admin'),
      field('Enabled', { name: 'enabled', type: 'checkbox', checked: existing ? existing.enabled : true }),
      field('Passwords refused (provider required)', { name: 'required', type: 'checkbox', checked: existing?.required }),
      field('Break-glass admin', { name: 'break_glass', spellcheck: 'false', value: existing?.break_glass },
        'Optional: the one admin who may still use a password'),
      field('Accept the provider’s access tokens', { name: 'accept_provider_tokens', type: 'checkbox', checked: existing?.accept_provider_tokens }),
    ], 'Save provider', async (values) => {
      const settings = {
        enabled: values.enabled === 'on',
        required: values.required === 'on',
        issuer: values.issuer.trim(),
        audience: values.audience.trim(),
        discovery_url: values.discovery_url.trim(),
        subject_claim: values.subject_claim.trim() || 'email',
        mfa_roles: values.mfa_roles.split(',').map((r) => r.trim()).filter(Boolean),
        accept_provider_tokens: values.accept_provider_tokens === 'on',
      };
      if (values.break_glass.trim()) settings.break_glass = values.break_glass.trim();
      await call('POST', '/auth/admin/federation', { ...named, settings });
      await refresh();
      say(`OpenID provider of ${shown.tenant_id} saved${settings.enabled ? ': on' : ', off'}.`);
    }, { 'aria-label': 'Set the OpenID provider' });
    const off = existing?.enabled ? action('Turn the provider off', async () => {
      await call('POST', '/auth/admin/federation/disable', named);
      await refresh();
      say(`OpenID provider of ${shown.tenant_id} turned off: its tokens are refused, passwords accepted again. The settings are kept.`);
    }, { class: 'secondary' }) : null;
    return [facts, off ? h('p', {}, off) : null,
      h('p', { class: 'muted' }, 'Browser sign-in: register ', h('code', {}, callback),
        ' as a redirect URI of a public client (PKCE) named as the audience.'),
      h('h3', {}, existing ? 'Change the provider' : 'Set a provider'), set];
  });
}

// ---------------------------------------------------------------------------------------------
// Platform operator: tenants, a tenant's first admin, its provider, keys and audit chain; the
// chain of requests refused before any tenant. Backups stay with healthctl (they read the store
// files; there is no HTTP API for them).

const UNATTRIBUTED = '_unattributed';

/** Verifies and exports one audit chain (jwks `/admin/audit/...`), the export every page of it. */
function auditChainCard(chain, title) {
  const result = h('p', { 'aria-live': 'polite' });
  const link = h('p', {});
  const check = action('Check the audit chain', async () => {
    const report = await call('GET', `/admin/audit/verify/${seg(chain)}`);
    result.textContent = report.intact
      ? `Intact: ${report.events} events, every link verified.`
      : `BROKEN at event ${report.broken_at} (of ${report.events}). Investigate at once.`;
  });
  const exporter = action('Prepare the export', async () => {
    const pages = [];
    let after = null;
    for (;;) {
      const query = new URLSearchParams({ limit: '1000' });
      if (after !== null) query.set('after', String(after));
      const text = await call('GET', `/admin/audit/export/${seg(chain)}?${query}`);
      const lines = text.split('\n').filter((l) => l.trim());
      pages.push(...lines);
      if (lines.length < 1000) break;
      after = JSON.parse(lines[lines.length - 1]).seq;
    }
    const url = URL.createObjectURL(new Blob([pages.map((l) => `${l}\n`).join('')], { type: 'application/x-ndjson' }));
    link.replaceChildren(h('a', { href: url, download: `audit-${chain}.ndjson`, class: 'audit-export' },
      `Download the audit chain of ${chain} (NDJSON, ${pages.length} event${pages.length === 1 ? '' : 's'})`));
    say('The audit export is ready to download.');
    link.querySelector('a').focus();
  });
  return panel(title, h('p', { class: 'muted' }, 'Every event in a hash chain; a changed or removed event breaks it.'),
    h('p', { class: 'row' }, check, exporter), result, link);
}

function operatorView() {
  const create = form([
    field('Tenant id', { name: 'tenant_id', required: true, spellcheck: 'false', autocapitalize: 'none' },
      'Lower-case letters, digits and dashes, e.g. st-marys'),
  ], 'Create tenant', async ({ tenant_id: tenantId }) => {
    const done = await call('POST', '/admin/tenants', { tenant_id: tenantId.trim() });
    show(...operatorTenant(done.tenant_id));
    say(`Tenant ${done.tenant_id} created with its signing and encryption keys. Next: its first admin.`);
  }, { 'aria-label': 'Create a tenant' });
  const open = form([
    field('Tenant id', { name: 'tenant', required: true, spellcheck: 'false', autocapitalize: 'none' }),
  ], 'Open tenant', async ({ tenant }) => {
    // A tenant without keys does not exist: said here rather than on each card.
    await call('GET', `/admin/keys/${seg(tenant)}`);
    show(...operatorTenant(tenant.trim()));
  }, { 'aria-label': 'Open a tenant', class: 'inline' });
  return [
    h('h1', {}, 'Platform operation'),
    h('div', { class: 'grid' }, panel('Create a tenant', create), panel('A tenant', open)),
    auditChainCard(UNATTRIBUTED, 'Requests refused before any tenant'),
    panel('Backups',
      h('p', {}, 'Backups are made, verified and restored with healthctl, not here: they read the store files themselves, so the platform has no HTTP API for them (by design: no request can copy every tenant’s data out). On the machine that runs the platform (README, Operations, Backups):'),
      h('pre', {}, h('code', {}, 'cargo run -q -p healthctl -- backup create --out "$BACKUP" --passphrase-file .spin/backup.passphrase'))),
  ];
}

/** One tenant as the operator sees it: users (its first admin), provider, keys, audit chain. */
function operatorTenant(tenant) {
  const back = h('button', { type: 'button', class: 'secondary', onclick: () => show(...operatorView()) }, 'Back to the platform');
  return [
    h('h1', {}, `Tenant ${tenant}`),
    h('p', {}, back),
    usersCard(tenant),
    federationCard(tenant),
    ...keysCard(tenant),
    auditChainCard(tenant, `Audit chain of ${tenant}`),
  ];
}

// ---------------------------------------------------------------------------------------------

/** The view of `session`'s role. */
export function viewFor(session) {
  switch (session.role) {
    case 'patient': return patientView();
    case 'doctor': return doctorView();
    case 'nurse': return nurseView();
    case 'pharmacist': return pharmacistView();
    case 'receptionist': return receptionView();
    case 'lab': return labView();
    case 'admin': return adminView(session);
    case 'operator': return operatorView();
    default:
      return [h('h1', {}, 'Signed in'), h('section', { class: 'card' },
        h('p', {}, `The portal has no view for the ${session.role} role yet; use the API (see the README).`))];
  }
}
