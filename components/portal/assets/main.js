// The portal's entry point: the account bar (who, change password, sign out here or
// everywhere) and the view of the signed-in role.

import * as api from './api.js';
import { h, field, form, say, show, busy } from './ui.js';
import { signInPage } from './signin.js';
import { viewFor, clearBanner } from './views.js';

let expiryTimer = null;
let idleTimer = null;
/** Signed out after this long without a key press, click or touch (the page enforces it; the
 * API's bound is the access token's lifetime). */
const IDLE_MS = 10 * 60 * 1000;

function resetIdle() {
  clearTimeout(idleTimer);
  if (!api.current()) return;
  idleTimer = setTimeout(() => {
    api.signOut(false).catch(() => {}).finally(() => say('You were signed out after 10 minutes without activity.'));
  }, IDLE_MS);
}
for (const type of ['keydown', 'pointerdown']) document.addEventListener(type, resetIdle, { passive: true });

function accountBar(session) {
  const nav = document.getElementById('account');
  if (!session) {
    nav.hidden = true;
    nav.replaceChildren();
    return;
  }
  const out = h('button', { type: 'button' }, 'Sign out');
  out.addEventListener('click', () => busy(out, () => api.signOut(false)));
  // The operator has no account here: no password to change, no other sessions.
  if (session.operator) {
    nav.replaceChildren(h('span', { class: 'who' }, 'Platform operator'), out);
    nav.hidden = false;
    return;
  }
  const all = h('button', { type: 'button' }, 'Sign out everywhere');
  all.addEventListener('click', () => busy(all, () => api.signOut(true)));
  const password = h('button', { type: 'button' }, 'Change password');
  password.addEventListener('click', () => passwordPage(session));
  nav.replaceChildren(
    h('span', { class: 'who' }, `${session.username} · ${session.role} · ${session.tenant}`),
    password, out, all);
  nav.hidden = false;
}

function passwordPage(session) {
  const change = form([
    field('Current password', { name: 'current', type: 'password', autocomplete: 'current-password', required: true }),
    field('New password', { name: 'next', type: 'password', autocomplete: 'new-password', minlength: 12, required: true },
      'At least 12 characters, not the current one'),
  ], 'Change password', async ({ current, next }, el) => {
    const result = await api.changePassword(current, next);
    el.reset();
    say(result.otherSessionsEnded ? 'Password changed. Your other sessions have been signed out.' : 'Password changed.');
    if (result.requiresReauth) api.forget();
  }, { 'aria-label': 'Change password' });
  const back = h('button', { type: 'button', class: 'secondary' }, 'Back');
  back.addEventListener('click', () => home(session));
  show(h('h1', {}, 'Change password'), h('section', { class: 'card' }, change), h('p', {}, back));
}

function scheduleRefresh(session) {
  clearTimeout(expiryTimer);
  const due = session.expiresAt * 1000 - Date.now() - 60 * 1000;
  expiryTimer = setTimeout(async () => {
    try {
      const next = await api.refresh();
      if (next) scheduleRefresh(next);
      else say('Your session has ended. Sign in again.');
    } catch {
      api.forget();
      say('Your session could not be renewed. Sign in again.');
    }
  }, Math.max(0, due));
}

function home(session) {
  show(...viewFor(session));
}

api.onSession((session) => {
  accountBar(session);
  clearTimeout(expiryTimer);
  if (!session) {
    clearTimeout(idleTimer);
    clearBanner();
    signInPage('You are signed out.');
    return;
  }
  // A minute before the access token expires, a new one from the refresh cookie; a session
  // the server has ended (absolute or idle timeout, sign-out elsewhere) ends here too. The
  // operator token does not expire: only sign-out, a reload or the idle timeout ends it.
  if (!session.operator) scheduleRefresh(session);
  resetIdle();
  home(session);
});

// A session this browser already has (a reload): its refresh cookie gives a new access token.
document.getElementById('boot')?.remove();
api.refresh().then((session) => { if (!session) signInPage(); }, () => signInPage());
