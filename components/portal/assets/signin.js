// Signing in: username and password (and the tenant), then a one-time code when the account
// has TOTP (`mfa-required`), or TOTP enrolment first when the role needs it and the account
// has none yet (`mfa-enrollment-required`): the otpauth URI as a QR code drawn here, in the
// browser, by the vendored qrcode-generator (no image service sees the secret).

import * as api from './api.js';
import qrcode from './vendor/qrcode.mjs';
import { h, field, form, say, show } from './ui.js';

const SVG = 'http://www.w3.org/2000/svg';

/** The QR code of `text` as an SVG element (one path of dark modules, a quiet zone of 4). */
export function qrSvg(text, label) {
  const qr = qrcode(0, 'M');
  qr.addData(text);
  qr.make();
  const count = qr.getModuleCount();
  const size = count + 8;
  let d = '';
  for (let row = 0; row < count; row++) {
    for (let col = 0; col < count; col++) {
      if (qr.isDark(row, col)) d += `M${col + 4} ${row + 4}h1v1h-1z`;
    }
  }
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `0 0 ${size} ${size}`);
  svg.setAttribute('class', 'qr');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', label);
  svg.setAttribute('shape-rendering', 'crispEdges');
  const background = document.createElementNS(SVG, 'rect');
  background.setAttribute('width', String(size));
  background.setAttribute('height', String(size));
  background.setAttribute('fill', '#fff');
  const path = document.createElementNS(SVG, 'path');
  path.setAttribute('d', d);
  path.setAttribute('fill', '#000');
  svg.append(background, path);
  return svg;
}

/** The sign-in page. */
export function signInPage(notice) {
  const credentials = form([
    field('Organisation', { name: 'tenant', value: 'demo-hospital', autocomplete: 'organization', required: true, spellcheck: 'false' },
      'Your hospital’s tenant id'),
    field('Username', { name: 'username', autocomplete: 'username', required: true, spellcheck: 'false', autocapitalize: 'none' }),
    field('Password', { name: 'password', type: 'password', autocomplete: 'current-password', required: true }),
  ], 'Sign in', async (values) => login(values), { 'aria-label': 'Sign in' });
  const provider = h('p', { hidden: true });
  // The platform operator (not a user of any tenant): the operator token, pasted, checked, and
  // kept in the page's memory only (api.signInOperator).
  const operator = form([
    field('Operator token', { name: 'token', type: 'password', autocomplete: 'off', required: true, spellcheck: 'false' },
      'Kept in this tab’s memory only: forgotten on sign-out, reload, or after 10 minutes idle'),
  ], 'Continue as operator', async ({ token }, el) => {
    await api.signInOperator(token);
    el.reset();
  }, { 'aria-label': 'Operator' });
  show(h('h1', {}, 'Sign in'), h('section', { class: 'card' }, credentials, provider),
    h('section', { class: 'card', 'aria-labelledby': 'operator-h' },
      h('h2', { id: 'operator-h' }, 'Platform operator'),
      h('p', { class: 'muted' }, 'Tenants, their first admin, their OpenID provider, keys and audit chains, with the platform operator token.'),
      operator));
  if (notice) say(notice);
  // The tenant's own OpenID provider, when it has one (auth: GET /auth/federation/{tenant}):
  // its sign-in starts at auth's authorize step and comes back here with the session's cookie.
  const offer = async () => {
    const tenant = credentials.elements.tenant.value.trim();
    provider.hidden = true;
    if (!tenant) return;
    const answer = await api.call('GET', `/auth/federation/${encodeURIComponent(tenant)}`).catch(() => null);
    if (!answer?.sign_in || answer.tenant_id !== credentials.elements.tenant.value.trim()) return;
    const start = () => window.location.assign(`${answer.authorize}?return_to=${encodeURIComponent('/app/')}`);
    provider.replaceChildren(h('button', { type: 'button', class: 'secondary', onclick: start },
      'Sign in with your hospital’s identity provider'));
    provider.hidden = false;
  };
  credentials.elements.tenant.addEventListener('change', offer);
  offer();
}

async function login(values) {
  try {
    await api.signIn(values);
  } catch (error) {
    if (error.slug === 'mfa-required') return otpStep(values);
    if (error.slug === 'mfa-enrollment-required') return enrolStep(values);
    throw error;
  }
}

function otpStep(values) {
  const step = form([
    field('One-time code', { name: 'otp', inputmode: 'numeric', autocomplete: 'one-time-code', pattern: '[0-9]{6}', maxlength: 6, required: true },
      'Six digits from your authenticator app'),
  ], 'Verify', async ({ otp }) => api.signIn({ ...values, otp: otp.trim() }), { 'aria-label': 'Two-step verification' });
  show(h('h1', {}, 'Two-step verification'), h('section', { class: 'card' }, step,
    h('p', {}, h('button', { type: 'button', class: 'secondary', onclick: () => signInPage() }, 'Start again'))));
  say('Enter the current code from your authenticator app.');
}

async function enrolStep(values) {
  const enrolment = await api.enroll(values);
  const step = form([
    field('Code from your app', { name: 'otp', inputmode: 'numeric', autocomplete: 'one-time-code', pattern: '[0-9]{6}', maxlength: 6, required: true },
      'Six digits'),
  ], 'Confirm and sign in', async ({ otp }) => {
    await api.confirm({ ...values, otp: otp.trim() });
    // Each code works once: the next sign-in needs the following one.
    otpStep(values);
    say('Authenticator set up. Enter the next code your app shows (each code works once).');
  }, { 'aria-label': 'Confirm authenticator' });
  show(
    h('h1', {}, 'Set up your authenticator'),
    h('section', { class: 'card' },
      h('p', {}, 'Scan this QR code with an authenticator app (any TOTP app).'),
      qrSvg(enrolment.otpauth_uri, 'QR code of your authenticator secret'),
      h('p', {}, 'Or type this key: ', h('code', { id: 'totp-secret' }, enrolment.secret)),
      h('p', { class: 'muted' }, 'It is shown once. Keep it to yourself.'),
      step));
  say('Your role needs a second factor. Scan the code with your authenticator app, then enter the code it shows.');
}
