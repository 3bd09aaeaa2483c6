/* Sign-in for a service with authentication on (python app.py -t query --auth).
 *
 * The token is kept in this tab's sessionStorage only: it is gone when the tab closes
 * and never reaches localStorage or a cookie. app.js adds crossmodalAuth.headers() to
 * its requests. The box appears only when the service answers 401 without a token.
 */
'use strict';

window.crossmodalAuth = (() => {
  const KEY = 'crossmodal.token';
  const $ = (id) => document.getElementById(id);

  const read = () => { try { return sessionStorage.getItem(KEY) || ''; } catch { return ''; } };
  const write = (token) => {
    try { if (token) sessionStorage.setItem(KEY, token); else sessionStorage.removeItem(KEY); } catch { /* disabled */ }
  };
  const headers = () => (read() ? { Authorization: `Bearer ${read()}` } : {});

  function apiBase() { // as app.js: the gateway that served the page, or ?api=URL
    const given = new URLSearchParams(location.search).get('api');
    if (given) return given.replace(/\/+$/, '');
    return location.protocol.startsWith('http') ? location.origin : 'http://127.0.0.1:45678';
  }

  /** HTTP status of an authenticated no-op (/stats), or 0 when the service is unreachable. */
  async function probe(token) {
    try {
      const response = await fetch(`${apiBase()}/stats`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', ...(token ? { Authorization: `Bearer ${token}` } : {}) },
        body: JSON.stringify({ data: [] }),
      });
      return response.status;
    } catch {
      return 0;
    }
  }

  function build() {
    const form = document.createElement('form');
    form.id = 'signin';
    form.className = 'who';
    form.hidden = true;
    form.noValidate = true;
    const label = Object.assign(document.createElement('label'), { htmlFor: 'signin-token', textContent: 'Token' });
    const input = Object.assign(document.createElement('input'), {
      id: 'signin-token', type: 'password', autocomplete: 'current-password', placeholder: 'cm_…', spellcheck: false,
    });
    const submit = Object.assign(document.createElement('button'), { type: 'submit', className: 'ghost small', textContent: 'Sign in' });
    const status = Object.assign(document.createElement('span'), { id: 'signin-status', className: 'muted small' });
    status.setAttribute('role', 'status');
    form.append(label, input, submit, status);
    const signout = Object.assign(document.createElement('button'), {
      id: 'signout', type: 'button', className: 'ghost small', textContent: 'Sign out', hidden: true,
    });
    document.querySelector('.who').after(form, signout);
    form.addEventListener('submit', signIn);
    signout.addEventListener('click', () => { write(''); location.reload(); });
  }

  async function signIn(event) {
    event.preventDefault();
    const token = $('signin-token').value.trim();
    if (!token) return;
    const status = await probe(token);
    if (status === 200) {
      write(token);
      location.reload(); // every view asks again, now with the token
    } else {
      $('signin-status').textContent = status === 401 ? 'token not accepted' : `service answered ${status || 'nothing'}`;
    }
  }

  async function start() {
    build();
    const token = read();
    const status = await probe(token);
    if (status === 401) {
      if (token) { write(''); $('signin-status').textContent = 'signed out: token no longer accepted'; }
      $('signin').hidden = false;
      $('signin-token').focus();
    } else if (status === 200 && token) {
      $('signout').hidden = false;
    }
  }

  document.addEventListener('DOMContentLoaded', start);
  return { headers };
})();
