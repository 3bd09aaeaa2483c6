/* crossmodal web page: search, post and recommendations over the Flow's HTTP API.
 *
 * Talks to the gateway that served the page (or to ?api=URL). A classic script, not a
 * module, so that the page also works opened from disk. Everything the service sends
 * is inserted as text or as data: image URLs, never as HTML.
 */
'use strict';

(() => {
  const API = apiBase();
  const MAX_IMAGE_BYTES = 20 * 2 ** 20; // the service's default ImageLimits.max_bytes
  const TIMEOUT_MS = 60_000;
  const MAX_REMEMBERED_POSTS = 50;
  const K_DEFAULT = 12;
  const K_MAX = 1000; // the service's Limits.max_k
  const HEALTH_MS = { online: 5_000, offline: 2_000 }; // how often the status pill asks /stats
  const $ = (id) => document.getElementById(id);

  const state = {
    query: null, // {text} or {uri, label}
    inFlight: null, // AbortController of the running search
    postImage: null, // data URI chosen in the post form
    k: K_DEFAULT, // the last valid "Results per kind"
    calibration: null, // the model's thresholds from /stats
    manualCutoff: false, // the person moved the cut-off: one threshold for every kind
    marks: new Map(), // result id -> 'positive' | 'negative', kept across refine rounds until "Start over"
    round: 0, // refine rounds done for the current query
  };

  function apiBase() {
    const given = new URLSearchParams(location.search).get('api');
    if (given) return given.replace(/\/+$/, '');
    return location.protocol.startsWith('http') ? location.origin : 'http://127.0.0.1:45678';
  }

  /* ---------------------------------------------------------------- storage */

  function load(key, fallback) {
    try {
      const value = localStorage.getItem(key);
      return value === null ? fallback : JSON.parse(value);
    } catch {
      return fallback; // storage disabled or corrupt: the page works without it
    }
  }

  function save(key, value) {
    try { localStorage.setItem(key, JSON.stringify(value)); } catch { /* full or disabled */ }
  }

  const currentUser = () => $('user').value.trim();

  /* ---------------------------------------------------------------- service */

  class ServiceError extends Error {
    constructor(kind, message) { super(message); this.kind = kind; }
  }

  /** POST one request; resolves to the response's documents, rejects with a ServiceError
   * (unreachable | timeout | rejected) or, when `signal` aborts, with an AbortError. */
  async function call(endpoint, data, parameters = {}, signal = undefined) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new ServiceError('timeout',
      `The service at ${API} did not answer within ${TIMEOUT_MS / 1000} s.`)), TIMEOUT_MS);
    signal?.addEventListener('abort', () => controller.abort(signal.reason));
    let response;
    try {
      response = await fetch(API + endpoint, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', ...window.crossmodalAuth?.headers() },
        body: JSON.stringify({ data, parameters }),
        signal: controller.signal,
      });
    } catch (err) {
      if (controller.signal.aborted) throw controller.signal.reason;
      const error = new ServiceError('unreachable',
        `Cannot reach the crossmodal service at ${API}. Is it running? Start it with “python app.py -t query”.`);
      setOnline(false, error.message);
      throw error;
    } finally {
      clearTimeout(timer);
    }
    setOnline(true);
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      throw new ServiceError('rejected',
        `The service could not do that: ${detail(body) || `HTTP ${response.status} ${response.statusText}`}`);
    }
    return body?.data ?? [];
  }

  /** The readable part of an error body: Jina sends {"detail": "ValueError('...')"},
   * FastAPI's validation sends {"detail": [{loc, msg}, ...]}. */
  function detail(body) {
    const value = body?.detail;
    if (Array.isArray(value)) return value.map((e) => `${(e.loc || []).join('.')}: ${e.msg}`).join('; ');
    if (typeof value !== 'string') return '';
    const wrapped = value.match(/^\w+\((['"])([\s\S]*)\1\)$/);
    return wrapped ? wrapped[2] : value;
  }

  function setOnline(online, message = '') {
    $('offline').hidden = online;
    $('offline-text').textContent = message;
    if (!online) {
      setService('offline', 'offline');
      scheduleHealth();
    } else if ($('service').dataset.state === 'offline') {
      setService('connecting', 'connecting…'); // back again: show fresh counts
      refreshStats();
      retryFailedView();
    }
  }

  /** After the service comes back, redo what the visible view could not do while it was away. */
  function retryFailedView() {
    const view = currentView();
    if (!$(`view-${view}`).querySelector('.notice.offline')) return;
    if (view === 'foryou') recommend();
    else if (view === 'search' && state.query) search(state.query);
    else $(`view-${view}`).querySelectorAll('.notice.offline').forEach((n) => n.remove());
  }

  let healthTimer = null;

  /** Ask /stats now and then, so the pill never shows stale counts and the page notices by
   * itself when a stopped service is back; more often while it is away. */
  function scheduleHealth() {
    clearTimeout(healthTimer);
    const offline = $('service').dataset.state === 'offline';
    healthTimer = setTimeout(async () => {
      if (!document.hidden) await refreshStats();
      scheduleHealth();
    }, offline ? HEALTH_MS.offline : HEALTH_MS.online);
  }

  function setService(stateName, text) {
    const pill = $('service');
    pill.dataset.state = stateName;
    pill.textContent = text;
  }

  async function refreshStats() {
    try {
      const [doc] = await call('/stats', []);
      const tags = doc?.tags || {};
      const count = tags.count || {};
      state.calibration = tags.relevance_threshold ? tags : null;
      setService('online', `${tags.model || 'model ?'} · ${plural(count.text || 0, 'text')} · ${plural(count.image || 0, 'image')}`);
    } catch (err) {
      if (err.kind !== 'unreachable') setService('offline', 'service error');
    }
  }

  const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;

  /* ---------------------------------------------------------------- DOM helpers */

  /** Create an element; `props` are properties (dataset merged), children are nodes or text. */
  function h(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === 'dataset') Object.assign(node.dataset, value);
      else if (key === 'class') node.className = value;
      else if (key.startsWith('aria-') || key === 'role') node.setAttribute(key, value);
      else node[key] = value;
    }
    node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
    return node;
  }

  /** A message box: kind is hint | empty | error | offline. */
  function notice(kind, title, text, action = null) {
    return h('div', { class: `notice ${kind}`, role: kind === 'error' || kind === 'offline' ? 'alert' : 'status' },
      h('p', { class: 'notice-title' }, title), text ? h('p', {}, text) : null, action);
  }

  function errorNotice(err, retry) {
    const offline = err.kind === 'unreachable';
    const retryButton = retry ? h('button', { type: 'button', class: 'ghost', onclick: retry }, 'Try again') : null;
    // Unreachable: the banner at the top already says why and how to start the service.
    const title = offline ? 'The service is not reachable' : err.kind === 'input' ? 'This file cannot be used' : 'Something went wrong';
    return notice(offline ? 'offline' : 'error', title,
      offline ? null : (err.message || String(err)), retryButton);
  }

  function setBusy(container, busy) {
    container.setAttribute('aria-busy', String(busy));
    container.classList.toggle('busy', busy);
  }

  const rounded = (value) => Math.round(value * 100) / 100; // what the page shows, and filters on
  const score = (value) => rounded(value).toFixed(2);

  /** The model's calibrated thresholds for a query and result kind ("text-image", either order). */
  function thresholds(queryKind, resultKind) {
    const cal = state.calibration;
    const pair = [queryKind, resultKind].sort().reverse().join('-');
    const likely = cal?.relevance_threshold?.[pair];
    return likely === undefined ? null : { likely, close: cal.close_threshold?.[pair] ?? likely };
  }

  /** The score in words, against the model's calibration for this kind of pair. */
  function scoreWords(value, limits) {
    if (!limits) return '';
    if (value >= limits.close) return 'close match';
    if (value >= limits.likely) return 'likely match';
    return 'weak match';
  }

  /** The score as words, a short meter and the number, so a list can be scanned by eye. */
  function scoreBadge(value, limits = null) {
    const fill = h('span', { class: 'meter-fill' });
    fill.style.setProperty('--s', Math.max(0, Math.min(1, value)).toFixed(3));
    const words = scoreWords(value, limits);
    return h('span', { class: 'score-line' },
      words ? h('span', { class: `words ${words.split(' ')[0]}` }, words) : null,
      h('span', { class: 'score', title: `cosine similarity ${value.toFixed(4)}` },
        h('span', { class: 'meter', 'aria-hidden': 'true' }, fill), score(value)));
  }

  /** Alt text that says what the picture shows, when the service knows it. */
  function altText(match) {
    const tags = match.tags || {};
    const words = match.text || tags.caption || tags.alt || tags.title
      || Object.entries(tags).filter(([, v]) => typeof v === 'string').map(([k, v]) => `${k}: ${v}`).join(', ');
    return words ? `${words} (posted by ${match.owner})` : `Image posted by ${match.owner}`;
  }

  /* ---------------------------------------------------------------- results */

  /** "Relevant" / "Not relevant" toggles of one search result (relevance feedback). */
  function markButtons(match) {
    const toggle = (kind, label, symbol) => h('button', {
      type: 'button', class: `mark ${kind}`, title: label, 'aria-label': `${label}: ${match.id}`,
      'aria-pressed': String(state.marks.get(match.id) === kind),
      onclick: (event) => {
        state.marks.get(match.id) === kind ? state.marks.delete(match.id) : state.marks.set(match.id, kind);
        for (const b of event.currentTarget.parentNode.children) {
          b.setAttribute('aria-pressed', String(state.marks.get(match.id) === (b.classList.contains('positive') ? 'positive' : 'negative')));
        }
        showFeedbackBar();
      },
    }, symbol);
    return h('span', { class: 'marks' }, toggle('positive', 'Relevant', '✓'), toggle('negative', 'Not relevant', '✗'));
  }

  function imageTile(match, limits, markable = false) {
    const usable = Boolean(match.thumbnail);
    return h('li', { class: 'tile-item', dataset: { score: match.score, id: match.id } },
      markable ? markButtons(match) : null,
      h('button', {
        type: 'button', class: 'tile', disabled: !usable,
        title: usable ? 'Find more like this' : 'No preview stored for this image',
        onclick: () => searchWith({ uri: match.thumbnail, label: `@${match.owner}’s image`, source: match.id }),
      },
      usable
        ? h('img', { src: match.thumbnail, alt: altText(match), loading: 'lazy', decoding: 'async' })
        : h('span', { class: 'no-thumb' }, 'no preview'),
      h('span', { class: 'tile-meta' }, h('span', { class: 'owner' }, `@${match.owner}`), scoreBadge(match.score, limits))));
  }

  function textItem(match, limits, markable = false) {
    return h('li', { class: 'text-item', dataset: { score: match.score, id: match.id } },
      markable ? markButtons(match) : null,
      h('button', { type: 'button', class: 'text-button', title: 'Find more like this',
        onclick: () => searchWith({ text: match.text, source: match.id }) },
      h('span', { class: 'text' }, match.text || ''),
      h('span', { class: 'text-meta' }, h('span', { class: 'owner' }, `@${match.owner}`), scoreBadge(match.score, limits))));
  }

  /** Image grid and text list of one group of matches, side by side on wide screens.
   * `empty` gives the message for a kind without matches; without one that kind is left out. */
  function matchSections(group, empty, level = 'h2', queryKind = null, markable = false) {
    const section = (kind, title, matches, render, listClass) => {
      if (!matches.length && !empty) return null;
      const limits = queryKind ? thresholds(queryKind, kind) : null;
      return h('section', { class: 'matches', dataset: { kind }, id: `${kind}-results` },
        h(level, { class: 'section-title' }, `${title} `, h('span', { class: 'count' }, String(matches.length))),
        matches.length ? h('ul', { class: listClass }, ...matches.map((m) => render(m, limits, markable)))
          : h('p', { class: 'muted empty' }, empty[kind]),
        h('p', { class: 'muted all-hidden', hidden: true }));
    };
    return h('div', { class: 'split' },
      section('image', 'Images', group?.image_matches || [], imageTile, 'grid'),
      section('text', 'Texts', group?.text_matches || [], textItem, 'list'));
  }

  /* ---------------------------------------------------------------- search */

  function searchWith(query) {
    if (query.text !== undefined) $('q').value = query.text;
    location.hash = '#search';
    window.scrollTo({ top: 0, behavior: matchMedia('(prefers-reduced-motion: reduce)').matches ? 'auto' : 'smooth' });
    search(query);
  }

  async function search(query, refining = false) {
    if (!refining) { state.marks.clear(); state.round = 0; }
    state.query = query;
    showQueryImage(query);
    state.inFlight?.abort();
    const controller = state.inFlight = new AbortController();
    const results = $('search-results');
    const parameters = { k: state.k + (query.source ? 1 : 0), with_thumbnails: true }; // room for the item itself
    if (currentUser()) parameters.username = currentUser();
    const doc = query.text !== undefined ? { id: 'q', text: query.text } : { id: 'q', uri: query.uri };
    const endpoint = refining ? '/refine' : '/search';
    if (refining) Object.assign(parameters, labels());
    setBusy(results, true);
    try {
      const [answer] = await call(endpoint, [doc], parameters, controller.signal);
      if (refining) state.round += 1;
      if (answer?.error) throw new ServiceError('rejected', `The service could not use this query: ${answer.error}`);
      renderSearch(dropSource(answer, query.source), query.text !== undefined ? 'text' : 'image');
    } catch (err) {
      if (err.name === 'AbortError') return; // a newer search replaced this one
      results.replaceChildren(errorNotice(err, () => search(query)));
      resetCutoff([]);
    } finally {
      if (state.inFlight === controller) {
        state.inFlight = null;
        setBusy(results, false);
      }
    }
  }

  /** "More like this" is about the others: the clicked item itself is not a result. */
  function dropSource(answer, source) {
    if (!answer) return answer;
    const cut = (matches) => (matches || []).filter((m) => m.id !== source).slice(0, state.k);
    return { ...answer, image_matches: cut(answer.image_matches), text_matches: cut(answer.text_matches) };
  }

  function renderSearch(answer, queryKind) {
    const results = $('search-results');
    const images = answer?.image_matches || [];
    const texts = answer?.text_matches || [];
    const who = currentUser();
    if (!images.length && !texts.length) {
      results.replaceChildren(notice('empty', 'Nothing found',
        who ? `Nobody but you (@${who}) has posted anything yet, or the index is empty. Post something, or search as another user.`
          : 'The index is empty. Post something first, or index a folder with “python app.py -t index”.'));
      resetCutoff([]);
      return;
    }
    const mine = who ? ` (your own posts, @${who}, are left out)` : '';
    results.replaceChildren(
      h('p', { class: 'no-close', role: 'status', hidden: true }),
      feedbackBar(),
      jumpLinks(images.length, texts.length),
      matchSections(answer, {
        image: `No images from other people${mine}.`,
        text: `No texts from other people${mine}.`,
      }, 'h2', queryKind, true));
    showFeedbackBar();
    resetCutoff([...images, ...texts].map((m) => m.score));
  }

  /* ------------------------------------------------------- relevance feedback */

  function labels() {
    const of = (kind) => [...state.marks].filter(([, v]) => v === kind).map(([id]) => id);
    return { positive: of('positive'), negative: of('negative') };
  }

  /** "Refine (n marks)" runs /refine with every mark so far; marked results do not come back,
   * and the marks stay for the next round until "Start over". */
  function feedbackBar() {
    return h('div', { class: 'feedback-bar', id: 'feedback-bar' },
      h('span', { class: 'muted', id: 'feedback-hint' }),
      h('button', { type: 'button', id: 'refine', class: 'primary', disabled: true,
        onclick: () => state.query && search(state.query, true) }, 'Refine'),
      h('button', { type: 'button', id: 'start-over', class: 'link', hidden: true,
        onclick: () => state.query && search(state.query) }, 'Start over'));
  }

  function showFeedbackBar() {
    const button = $('refine');
    if (!button) return;
    const n = state.marks.size;
    button.disabled = n === 0;
    button.textContent = n ? `Refine (${n} mark${n === 1 ? '' : 's'})` : 'Refine';
    $('start-over').hidden = !n && !state.round;
    $('feedback-hint').textContent = state.round
      ? `Round ${state.round}: refined with your ${n} mark${n === 1 ? '' : 's'}; results you marked are left out.`
      : 'Mark results ✓ relevant or ✗ not relevant, then refine.';
  }

  /** On a phone the texts come after every image: say they exist and jump there. */
  function jumpLinks(images, texts) {
    const jump = (kind, text) => h('button', { type: 'button', class: 'link', onclick: () => {
      $(`${kind}-results`)?.scrollIntoView({ behavior: 'smooth', block: 'start' });
    } }, text);
    return h('p', { class: 'jump muted small' }, 'Found ', jump('image', plural(images, 'image')), ' and ',
      jump('text', plural(texts, 'text')), '.');
  }

  function showQueryImage(query) {
    const chip = $('query-image');
    chip.hidden = !query.uri;
    if (query.uri) {
      $('query-image-preview').src = query.uri;
      $('query-image-label').textContent = query.label || 'image';
      $('q').value = '';
    }
  }

  function submitSearch(event) {
    event.preventDefault();
    const text = $('q').value.trim();
    if (text) searchWith({ text });
    else if (state.query?.uri) search(state.query);
    else {
      $('q').focus();
      $('search-results').replaceChildren(notice('hint', 'What are you looking for?',
        'Type a few words, or drop, paste or choose an image.'));
    }
  }

  /* ---------------------------------------------------------------- relevance cut-off */

  /** Fit the slider to the scores on screen. It starts at the model's calibrated "likely
   * match" line of each kind of result (text-to-image and text-to-text scores live in
   * different bands); moving it sets one threshold for every kind; Home shows all. */
  function resetCutoff(scores) {
    const slider = $('cutoff');
    slider.disabled = scores.length === 0;
    state.manualCutoff = !state.calibration;
    if (scores.length) {
      const low = Math.floor(Math.min(...scores) * 100) / 100;
      const high = Math.max(rounded(Math.max(...scores)), low + 0.01);
      slider.min = String(low);
      slider.max = String(high);
      const starts = [...$('search-results').querySelectorAll('.matches')]
        .map((section) => itemLimits(section)?.likely).filter((v) => v !== undefined);
      slider.value = String(state.manualCutoff || !starts.length ? low : Math.min(high, Math.max(low, Math.min(...starts))));
    }
    applyCutoff();
  }

  /** The calibrated limits a section's items are judged by (null: the model has none). */
  function itemLimits(section) {
    const queryKind = state.query?.text !== undefined ? 'text' : 'image';
    return thresholds(queryKind, section.dataset.kind);
  }

  function applyCutoff() {
    const slider = $('cutoff');
    const threshold = Number(slider.value);
    const auto = !slider.disabled && !state.manualCutoff;
    const active = !slider.disabled && (auto || threshold > Number(slider.min));
    let hidden = 0;
    let shownTotal = 0;
    for (const section of $('search-results').querySelectorAll('.matches')) {
      const items = [...section.querySelectorAll('[data-score]')];
      const line = auto ? itemLimits(section)?.likely ?? -Infinity : threshold;
      for (const item of items) {
        item.hidden = active && rounded(Number(item.dataset.score)) < rounded(line);
        hidden += item.hidden;
      }
      const shown = items.filter((item) => !item.hidden).length;
      shownTotal += shown;
      section.querySelector('.count').textContent = shown === items.length ? `${items.length}` : `${shown} of ${items.length}`;
      const note = section.querySelector('.all-hidden');
      note.hidden = !(items.length && shown === 0);
      note.textContent = auto ? `No close match among ${plural(items.length, section.dataset.kind)}: move the cut-off left to see them anyway.`
        : `All ${items.length} are below the cut-off.`;
    }
    const none = $('search-results').querySelector('.no-close');
    if (none) {
      none.hidden = !(active && hidden && shownTotal === 0);
      none.textContent = 'No close match. Nothing scores high enough to be likely what you mean; move the cut-off left to see the nearest results anyway.';
    }
    $('cutoff-value').textContent = slider.disabled ? 'no results yet'
      : auto ? `likely matches · ${hidden} hidden`
        : active ? `≥ ${score(threshold)} · ${hidden} hidden` : 'showing all';
  }

  /* ---------------------------------------------------------------- images from the user */

  /** A picked, dropped or pasted file as a data: URI, after the checks the service would make. */
  function readImage(file) {
    return new Promise((resolve, reject) => {
      if (!file.type.startsWith('image/')) {
        reject(new ServiceError('input', `“${file.name}” is not an image (${file.type || 'unknown type'}).`));
      } else if (file.size > MAX_IMAGE_BYTES) {
        reject(new ServiceError('input', `“${file.name}” is ${(file.size / 2 ** 20).toFixed(1)} MB; the limit is ${MAX_IMAGE_BYTES / 2 ** 20} MB.`));
      } else {
        const reader = new FileReader();
        reader.onload = () => resolve(reader.result);
        reader.onerror = () => reject(new ServiceError('input', `Could not read “${file.name}”.`));
        reader.readAsDataURL(file);
      }
    });
  }

  async function searchWithFile(file) {
    try {
      searchWith({ uri: await readImage(file), label: file.name || 'pasted image' });
    } catch (err) {
      $('search-results').replaceChildren(errorNotice(err));
    }
  }

  function imageFrom(dataTransfer) {
    return [...(dataTransfer?.files || [])].find((f) => f.type.startsWith('image/'))
      || [...(dataTransfer?.items || [])].find((i) => i.type.startsWith('image/'))?.getAsFile();
  }

  function setupDrop() {
    const overlay = $('drop-overlay');
    let depth = 0; // dragenter/dragleave fire for every child element crossed
    const carriesFiles = (event) => [...(event.dataTransfer?.types || [])].includes('Files');
    window.addEventListener('dragenter', (event) => {
      if (!carriesFiles(event) || currentView() === 'foryou') return;
      depth += 1;
      $('drop-text').textContent = currentView() === 'post' ? 'Drop the image to post it' : 'Drop the image to search with it';
      overlay.hidden = false;
    });
    window.addEventListener('dragleave', () => { depth = Math.max(0, depth - 1); if (!depth) overlay.hidden = true; });
    window.addEventListener('dragover', (event) => { if (carriesFiles(event)) event.preventDefault(); });
    window.addEventListener('drop', (event) => {
      event.preventDefault();
      depth = 0;
      overlay.hidden = true;
      const file = imageFrom(event.dataTransfer);
      if (file) useImage(file);
    });
    window.addEventListener('paste', (event) => {
      const file = imageFrom(event.clipboardData);
      if (file && currentView() !== 'foryou') { event.preventDefault(); useImage(file); }
    });
  }

  const useImage = (file) => (currentView() === 'post' ? choosePostImage(file) : searchWithFile(file));

  /* ---------------------------------------------------------------- posting */

  const postsKey = (user) => `crossmodal.posts.${user}`;

  function postKind() {
    return document.querySelector('input[name="kind"]:checked').value;
  }

  function showPostKind() {
    const image = postKind() === 'image';
    $('post-text-field').hidden = image;
    $('post-image-field').hidden = !image;
  }

  async function choosePostImage(file) {
    document.getElementById('kind-image').checked = true;
    showPostKind();
    try {
      state.postImage = await readImage(file);
      $('post-preview').src = state.postImage;
      $('post-preview').hidden = false;
      $('post-drop-text').textContent = `${file.name || 'pasted image'} · drop or choose another to replace it`;
      $('post-status').replaceChildren();
    } catch (err) {
      $('post-status').replaceChildren(errorNotice(err));
    }
  }

  function clearPostForm() {
    $('post-text').value = '';
    state.postImage = null;
    $('post-preview').hidden = true;
    $('post-preview').removeAttribute('src');
    $('post-drop-text').textContent = 'Drop an image here, paste one, or choose a file';
    $('post-file').value = '';
  }

  async function submitPost(event) {
    event.preventDefault();
    const status = $('post-status');
    const user = currentUser();
    if (!user) {
      status.replaceChildren(notice('error', 'Who are you?', 'Enter your name in “You are” at the top first: every post has an owner.'));
      $('user').focus();
      return;
    }
    const kind = postKind();
    const text = $('post-text').value.trim();
    if (kind === 'text' ? !text : !state.postImage) {
      status.replaceChildren(notice('error', 'Nothing to post', kind === 'text' ? 'Write some text first.' : 'Choose an image first.'));
      return;
    }
    const id = `${user}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`;
    const doc = kind === 'text'
      ? { id, owner: user, modality: 'text', text }
      : { id, owner: user, modality: 'image', uri: state.postImage };
    const button = $('post-submit');
    button.disabled = true;
    try {
      const [answer] = await call('/index', [doc]);
      if (!answer || answer.status === 'error') {
        throw new ServiceError('rejected', `The service refused the post: ${answer?.error || 'no answer for it'}`);
      }
      await remember(user, { id, modality: kind, text: kind === 'text' ? text : null, preview: kind === 'image' ? await shrink(state.postImage) : null });
      status.replaceChildren(notice('hint', 'Posted', `Others can now find it in their searches (as @${user}).`));
      clearPostForm();
      refreshStats();
    } catch (err) {
      status.replaceChildren(errorNotice(err));
    } finally {
      button.disabled = false;
    }
  }

  /** A small JPEG of an image for the "your posts" list: localStorage holds a few MB at most. */
  function shrink(dataUri, size = 96) {
    return new Promise((resolve) => {
      const image = new Image();
      image.onload = () => {
        const scale = size / Math.max(image.width, image.height, 1);
        const canvas = h('canvas', { width: Math.max(1, Math.round(image.width * scale)), height: Math.max(1, Math.round(image.height * scale)) });
        canvas.getContext('2d').drawImage(image, 0, 0, canvas.width, canvas.height);
        resolve(canvas.toDataURL('image/jpeg', 0.8));
      };
      image.onerror = () => resolve(null);
      image.src = dataUri;
    });
  }

  async function remember(user, post) {
    const posts = [{ ...post, at: Date.now() }, ...load(postsKey(user), [])].slice(0, MAX_REMEMBERED_POSTS);
    save(postsKey(user), posts);
    renderMyPosts();
  }

  function forget(user, id) {
    save(postsKey(user), load(postsKey(user), []).filter((p) => p.id !== id));
    renderMyPosts();
  }

  async function deletePost(user, post, button) {
    button.disabled = true;
    try {
      await call('/delete', [{ id: post.id }]); // "not_found" too means it is gone
      forget(user, post.id);
      $('post-status').replaceChildren();
      refreshStats();
    } catch (err) {
      button.disabled = false;
      $('post-status').replaceChildren(errorNotice(err));
    }
  }

  function renderMyPosts() {
    const user = currentUser();
    const list = $('my-posts');
    const posts = user ? load(postsKey(user), []) : [];
    $('post-as').textContent = user ? `as @${user}` : 'enter your name at the top first';
    if (!posts.length) {
      list.replaceChildren(h('li', { class: 'muted empty' }, user ? 'Nothing posted from this browser yet.' : 'Tell us who you are to see your posts.'));
      return;
    }
    list.replaceChildren(...posts.map((post) => h('li', { class: 'my-post', dataset: { id: post.id } },
      post.preview ? h('img', { src: post.preview, alt: 'Your image' }) : h('span', { class: 'text' }, post.text || '(image)'),
      h('span', { class: 'muted small' }, new Date(post.at).toLocaleString()),
      h('span', { class: 'actions' },
        h('button', { type: 'button', class: 'ghost small', onclick: () => searchWith(post.text ? { text: post.text } : { uri: post.preview, label: 'your image' }) }, 'Find similar'),
        h('button', { type: 'button', class: 'ghost small danger', 'aria-label': `Delete post ${post.id}`, onclick: (e) => deletePost(user, post, e.currentTarget) }, 'Delete')))));
  }

  /* ---------------------------------------------------------------- recommendations */

  const MEMBERS_SHOWN = 8; // posts listed under an interest (the rest are counted)
  const quote = (text, max = 60) => `“${text.length > max ? `${text.slice(0, max - 1)}…` : text}”`;
  const KIND_TEXT = {
    medoid: (m, name) => [name ? `Because you posted ${name}` : `Your ${m} interest`, `Close to a group of your ${m} posts.`],
    serendipity: (m, name) => ['Something different', `Near ${name || `a ${m} post of yours`}, which stands apart from the rest.`],
    history: (m) => [`Your recent ${m} posts`, 'No clear interest yet: near what you posted lately.'],
  };

  /** What the service says about each interest, by the key its results carry (`seed`). */
  function seedsByKey(doc) {
    const byKey = new Map();
    for (const seed of doc?.seeds || []) {
      if (!seed.key) continue;
      if (!byKey.has(seed.key)) byKey.set(seed.key, []);
      byKey.get(seed.key).push(seed);
    }
    return byKey;
  }

  /** Which of the person's posts form an interest, by text or picture (`items`: what the service
   * answered for the first ones; posts it did not describe are shown by their id). */
  function memberList(seeds, items) {
    const ids = [...new Set(seeds.flatMap((s) => s.member_ids || []))];
    if (!ids.length) return null;
    const shown = ids.slice(0, MEMBERS_SHOWN).map((id) => {
      const item = items.get(id);
      if (item?.thumbnail) return h('li', {}, h('img', { src: item.thumbnail, alt: item.text || 'Your image' }));
      return h('li', {}, item?.text ? quote(item.text, 80) : h('code', {}, id));
    });
    if (ids.length > shown.length) shown.push(h('li', { class: 'muted' }, `and ${ids.length - shown.length} more`));
    return h('details', { class: 'members' },
      h('summary', {}, ids.length === 1 ? 'From 1 of your posts' : `From ${ids.length} of your posts`),
      h('ul', {}, ...shown));
  }

  /** Text and thumbnail of the first posts of each interest, in one request (empty if it fails:
   * the list then shows ids). */
  async function memberItems(doc) {
    const ids = [...new Set((doc?.seeds || []).flatMap((s) => (s.member_ids || []).slice(0, MEMBERS_SHOWN)))];
    if (!ids.length) return new Map();
    try {
      const items = await call('/items', ids.slice(0, 100).map((id) => ({ id })));
      return new Map(items.filter((i) => i.status === 'ok').map((i) => [i.id, i]));
    } catch {
      return new Map();
    }
  }

  /** Matches grouped by the seed (interest) that produced them, in the service's order. */
  function groupBySeed(doc) {
    const groups = new Map();
    for (const [source, group] of [['text', doc.from_text], ['image', doc.from_image]]) {
      for (const kind of ['image_matches', 'text_matches']) {
        for (const match of group?.[kind] || []) {
          const seed = match.seed || `${source}:history:${match.cluster ?? -1}`;
          if (!groups.has(seed)) groups.set(seed, { seed, image_matches: [], text_matches: [] });
          groups.get(seed)[kind].push(match);
        }
      }
    }
    return [...groups.values()];
  }

  /** One interest, named by the person's most typical post in it (its text, or its picture). */
  function seedCard(group, seeds, items) {
    const [modality, kind, clusterText] = group.seed.split(':');
    const cluster = Number(clusterText);
    const named = seeds.find((s) => s.post_text || s.post_thumbnail);
    const name = named?.post_text ? quote(named.post_text) : named?.post_thumbnail ? 'this image' : '';
    const [title, subtitle] = (KIND_TEXT[kind] || KIND_TEXT.history)(modality, name);
    const mark = named?.post_thumbnail && !named.post_text
      ? h('img', { class: 'badge picture', src: named.post_thumbnail, alt: 'Your image this interest is named after' })
      : h('span', { class: 'badge', 'aria-hidden': 'true' }, kind === 'medoid' ? '♥' : kind === 'serendipity' ? '✦' : '↺');
    const card = h('article', { class: `interest ${kind}`, dataset: { seed: group.seed, cluster: String(cluster) } },
      h('header', { class: 'interest-head' }, mark,
        h('div', {}, h('h2', {}, title), h('p', { class: 'muted small' }, subtitle), memberList(seeds, items))),
      matchSections(group, null, 'h3', modality));
    card.style.setProperty('--hue', String(kind === 'medoid' ? (cluster * 67 + (modality === 'image' ? 200 : 250)) % 360 : 35));
    return card;
  }

  async function recommend() {
    const results = $('foryou-results');
    const user = currentUser();
    $('foryou-title').textContent = user ? `For you, @${user}` : 'For you';
    if (!user) {
      results.replaceChildren(notice('hint', 'Who are you?', 'Enter your name in “You are” at the top: suggestions follow what you posted.'));
      return;
    }
    setBusy(results, true);
    try {
      const [doc] = await call('/recommend', [{ id: 'r' }], { username: user, k: state.k, with_thumbnails: true });
      const groups = doc ? groupBySeed(doc) : [];
      if (!groups.length) {
        const reason = doc?.reason ? `${doc.reason[0].toUpperCase()}${doc.reason.slice(1)}.` : 'Nothing from other people is close to your posts yet.';
        results.replaceChildren(notice('empty', 'No suggestions yet', `${reason} Post a few texts or images, then come back.`));
      } else {
        const seeds = seedsByKey(doc);
        const items = await memberItems(doc);
        results.replaceChildren(...groups.map((g) => seedCard(g, seeds.get(g.seed) || [], items)));
      }
    } catch (err) {
      results.replaceChildren(errorNotice(err, recommend));
    } finally {
      setBusy(results, false);
    }
  }

  /* ---------------------------------------------------------------- views and start-up */

  const VIEWS = ['search', 'post', 'foryou'];

  function currentView() {
    const name = location.hash.slice(1);
    return VIEWS.includes(name) ? name : 'search';
  }

  function showView() {
    const view = currentView();
    for (const name of VIEWS) $(`view-${name}`).hidden = name !== view;
    for (const link of document.querySelectorAll('.views a')) {
      if (link.dataset.view === view) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    if (view === 'foryou') recommend();
  }

  function onUserChange() {
    save('crossmodal.user', currentUser());
    renderMyPosts();
    if (currentView() === 'foryou') recommend();
    else if (state.query && currentView() === 'search') search(state.query); // the exclusion changed
  }

  /** A whole number in 1..K_MAX from the box or storage, else null. */
  function validK(value) {
    const text = String(value ?? '').trim();
    const n = Number(text);
    return /^\d+$/.test(text) && n >= 1 && n <= K_MAX ? n : null;
  }

  /** Only a valid value is used and stored; an invalid one is explained at the box while
   * searches go on with the last valid value. */
  function onKInput(event) {
    const k = validK($('k').value);
    $('k').setAttribute('aria-invalid', String(k === null));
    $('k-error').hidden = k !== null;
    $('k-error').textContent = k === null ? `Enter a whole number from 1 to ${K_MAX}; using ${state.k} meanwhile.` : '';
    if (k === null || event.type !== 'change' || k === state.k) return;
    state.k = k;
    save('crossmodal.k', k);
    if (currentView() === 'foryou') recommend();
    else if (state.query) search(state.query);
  }

  function start() {
    $('user').value = load('crossmodal.user', '');
    state.k = validK(load('crossmodal.k', K_DEFAULT)) ?? K_DEFAULT; // a stored bad value is replaced
    save('crossmodal.k', state.k);
    $('k').value = String(state.k);
    $('user').addEventListener('change', onUserChange);
    $('k').addEventListener('input', onKInput);
    $('k').addEventListener('change', onKInput);
    $('k').addEventListener('blur', () => { if (validK($('k').value) === null) { $('k').value = String(state.k); onKInput({ type: 'blur' }); } });
    $('search-form').addEventListener('submit', submitSearch);
    $('q-file').addEventListener('change', (e) => { if (e.target.files[0]) searchWithFile(e.target.files[0]); e.target.value = ''; });
    $('query-image-clear').addEventListener('click', () => {
      state.query = null;
      $('query-image').hidden = true;
      $('q').focus();
    });
    const manual = () => { state.manualCutoff = true; applyCutoff(); }; // Home on the slider shows all
    $('cutoff').addEventListener('input', manual);
    $('cutoff').addEventListener('keydown', (e) => { if (['Home', 'End'].includes(e.key)) setTimeout(manual); });
    $('cutoff').addEventListener('pointerdown', manual);
    $('post-form').addEventListener('submit', submitPost);
    for (const radio of document.querySelectorAll('input[name="kind"]')) {
      radio.addEventListener('change', () => { $('post-status').replaceChildren(); showPostKind(); });
    }
    $('post-file').addEventListener('change', (e) => { if (e.target.files[0]) choosePostImage(e.target.files[0]); });
    $('foryou-refresh').addEventListener('click', recommend);
    $('offline-retry').addEventListener('click', refreshStats);
    document.addEventListener('visibilitychange', () => { if (!document.hidden) refreshStats(); });
    window.addEventListener('hashchange', showView);
    setupDrop();
    showPostKind();
    renderMyPosts();
    showView();
    refreshStats();
    scheduleHealth();
  }

  start();
})();
