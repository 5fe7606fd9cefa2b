// The console's entry point: sign-in, the admin probe, and the hash router.

// Uncaught errors are kept where a test (or a curious operator) can read them.
window.__strataErrors = [];
window.addEventListener('error', (event) => window.__strataErrors.push(String(event.message || event)));
window.addEventListener('unhandledrejection', (event) => window.__strataErrors.push(String(event.reason)));

import { api, ApiError, h, setToken, token } from './api.js';
import { overviewPage, datasetPage, runsPage, runPage, auditPage, queryPage } from './pages.js';
import { policiesPage, policyPage } from './admin.js';

const main = document.getElementById('main');
let session = { admin: false };

/** Asks the operator to confirm `text`; resolves true on Confirm. */
export function confirmAction(text) {
  const dialog = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = text;
  return new Promise((resolve) => {
    const done = (answer) => {
      dialog.close();
      ok.removeEventListener('click', yes);
      cancel.removeEventListener('click', no);
      resolve(answer);
    };
    const ok = document.getElementById('confirm-ok');
    const cancel = document.getElementById('confirm-cancel');
    const yes = () => done(true);
    const no = () => done(false);
    ok.addEventListener('click', yes);
    cancel.addEventListener('click', no);
    dialog.showModal();
  });
}

/** Whether the session's token may use admin endpoints. */
export function isAdmin() {
  return session.admin;
}

/** Shows an error where a page would be. */
export function showError(target, error) {
  const text = error instanceof ApiError ? `${error.code}: ${error.message}` : String(error);
  target.replaceChildren(h('p', { class: 'error', 'data-error': error.code || 'error' }, text));
}

async function probe() {
  // The bucket list needs any valid token (or none while auth is off) and
  // reads no partitions; the policy list needs admin.
  const admin = api('/v1/policies').then(() => true, (error) => error);
  await api('/api/v2/buckets');
  const answer = await admin;
  if (answer !== true && (!(answer instanceof ApiError) || answer.status !== 403)) throw answer;
  session.admin = answer === true;
  document.body.classList.toggle('admin', session.admin);
  document.getElementById('who').textContent = (token() ? 'signed in' : 'no token') + (session.admin ? ' · admin' : ' · read');
}

function askToken(message) {
  const dialog = document.getElementById('login');
  const input = document.getElementById('login-token');
  document.getElementById('login-error').textContent = message || '';
  return new Promise((resolve) => {
    const submit = () => {
      setToken(input.value.trim());
      input.value = '';
      dialog.close();
      button.removeEventListener('click', submit);
      resolve();
    };
    const button = document.getElementById('login-submit');
    button.addEventListener('click', submit);
    input.onkeydown = (event) => { if (event.key === 'Enter') submit(); };
    dialog.showModal();
  });
}

async function signIn() {
  for (;;) {
    try {
      await probe();
      return;
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        await askToken(token() ? 'That token was refused: ' + error.message : '');
      } else {
        throw error;
      }
    }
  }
}

const routes = [
  [/^#\/overview$/, () => overviewPage(main)],
  [/^#\/dataset\/([^/]+)$/, (m) => datasetPage(main, decodeURIComponent(m[1]))],
  [/^#\/policies$/, () => policiesPage(main)],
  [/^#\/policy\/([^/]+)$/, (m) => policyPage(main, decodeURIComponent(m[1]))],
  [/^#\/runs$/, () => runsPage(main)],
  [/^#\/run\/(\d+)$/, (m) => runPage(main, m[1])],
  [/^#\/audit$/, () => auditPage(main)],
  [/^#\/query$/, () => queryPage(main)],
];

async function route() {
  const hash = location.hash || '#/overview';
  const page = hash.split('/')[1] || 'overview';
  for (const link of document.querySelectorAll('#nav a')) {
    link.classList.toggle('active', link.dataset.page === page || (page === 'dataset' && link.dataset.page === 'overview'));
  }
  document.body.dataset.page = '';
  for (const [pattern, render] of routes) {
    const match = pattern.exec(hash);
    if (!match) continue;
    main.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
    try {
      await render(match);
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        await askToken('The token was refused: ' + error.message);
        await signIn();
        return route();
      }
      showError(main, error);
    }
    document.body.dataset.page = page;
    return;
  }
  location.hash = '#/overview';
}

document.getElementById('sign-out').addEventListener('click', () => {
  setToken('');
  location.reload();
});

window.addEventListener('hashchange', route);
signIn().then(route).catch((error) => showError(main, error));
