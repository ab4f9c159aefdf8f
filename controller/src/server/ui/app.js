// detour's status page: listens to the status API's event stream and keeps the page in
// step with it, without reloads.
//
// Every value from the controller is data, not markup: names come from documents and
// messages quote configuration and errors, so the DOM is built with createElement and
// textContent (attributes with setAttribute/dataset), never innerHTML. The server's
// Content-Security-Policy forbids inline script as a second line of defence.
'use strict';

(function () {
  const STREAM = '../v1/status/events';
  const EVENTS_SHOWN = 100;
  const RETRY_MS = 2000;

  const $ = (id) => document.getElementById(id);
  const view = {
    report: null,
    // scheme name -> {sig, row}: a row is rebuilt only when its scheme changed.
    rows: new Map(),
    // "cluster service" -> {sig, row}, the same for the services of every cluster.
    serviceRows: new Map(),
    filter: '',
    problemsOnly: false,
    unprotectedOnly: false,
    rendered: false,
  };

  // --- small DOM helpers ------------------------------------------------------------
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  // --- time ---------------------------------------------------------------------------
  function pad(n) {
    return String(n).padStart(2, '0');
  }

  function clock(ms) {
    const d = new Date(ms);
    const time = pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
    const today = new Date();
    if (d.toDateString() === today.toDateString()) return time;
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' + time;
  }

  // 42s, 3m 12s, 2h 5m, 3d 4h.
  function span(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + 's';
    const m = Math.floor(s / 60);
    if (m < 60) return m + 'm ' + (s % 60) + 's';
    const h = Math.floor(m / 60);
    if (h < 24) return h + 'h ' + (m % 60) + 'm';
    return Math.floor(h / 24) + 'd ' + (h % 24) + 'h';
  }

  // An element showing how long ago `iso` was; the ticker keeps it current.
  function since(iso, cls) {
    const e = el('span', cls || 'since');
    const at = Date.parse(iso);
    if (!Number.isNaN(at)) {
      e.dataset.since = String(at);
      e.textContent = span(Date.now() - at);
    }
    return e;
  }

  function tick() {
    const now = Date.now();
    for (const e of document.querySelectorAll('[data-since]')) {
      e.textContent = span(now - Number(e.dataset.since));
    }
  }

  // --- summary and banners ------------------------------------------------------------
  function chip(text, cls, title) {
    const li = el('li', 'chip' + (cls ? ' ' + cls : ''), text);
    if (title) li.title = title;
    return li;
  }

  function renderHeader(r) {
    const s = r.summary;
    const ul = $('summary');
    clear(ul);
    ul.append(
      chip(s.clusters + (s.clusters === 1 ? ' cluster' : ' clusters')),
      chip(s.schemes + (s.schemes === 1 ? ' scheme' : ' schemes')),
      chip(s.failedOver + ' failed over', s.failedOver > 0 ? 'warn' : 'ok',
        'Schemes whose traffic is not on their primary'),
      chip(s.targets.healthy + ' healthy', s.targets.healthy > 0 ? 'ok' : 'quiet', 'Targets of every scheme'),
      chip(s.targets.unhealthy + ' unhealthy', s.targets.unhealthy > 0 ? 'bad' : 'quiet'),
      chip(s.targets.unknown + ' unknown', s.targets.unknown > 0 ? 'unknown' : 'quiet'),
    );
    // An older controller's document has no services.
    const services = s.services || { protected: 0, unprotected: 0 };
    ul.append(chip(services.unprotected + ' unprotected ' + (services.unprotected === 1 ? 'service' : 'services'),
      services.unprotected > 0 ? 'warn' : 'quiet',
      'Services of the member clusters that no scheme names (' + services.protected + ' protected)'));
    $('notready').hidden = r.controller.ready;
    const expiring = (r.controller.certificates || []).filter((c) => c.expiring);
    $('certs').hidden = expiring.length === 0;
    const certs = $('certs-list');
    clear(certs);
    for (const c of expiring) {
      const li = el('li', null, c.file + ' (' + c.identity + '): until ' + clock(Date.parse(c.notAfter)));
      li.dataset.file = c.file;
      certs.append(li);
    }
    const config = r.controller.config;
    const refused = !!config && config.outcome === 'Refused';
    $('config').hidden = !refused;
    if (refused) {
      $('config-at').textContent = 'at ' + clock(Date.parse(config.at));
      $('config-message').textContent = config.message || '';
    }
  }

  // --- schemes ------------------------------------------------------------------------
  function healthClass(h) {
    return h === 'Healthy' ? 'ok' : h === 'Unhealthy' ? 'bad' : 'unknown';
  }

  function targetChip(t, scheme) {
    const c = el('span', 'target ' + healthClass(t.health));
    c.dataset.cluster = t.cluster;
    c.dataset.health = t.health;
    c.append(el('span', 'dot'), el('span', 'tname', t.cluster));
    if (t.weight !== 1) c.append(el('span', 'weight', '×' + t.weight));
    if (t.basis === 'Recovering') {
      c.classList.add('recovering');
      c.append(el('span', 'mark', '↺'));
    }
    c.append(since(t.since));
    let title = t.service + ' in ' + t.cluster + ': ' + t.health + ' since ' + clock(Date.parse(t.since));
    if (t.basis === 'Recovering' && t.recoveringUntil) {
      title += '\nhealthy again; takes traffic back at ' + clock(Date.parse(t.recoveringUntil)) +
        ' (failback.stableFor ' + span(scheme.stableForMs) + ')';
    } else if (t.basis === 'Unchecked') {
      title += '\nnot checked yet';
    } else if (t.basis === 'NoReadyEndpoints') {
      title += '\nno ready endpoint in its cluster';
    }
    if (t.lastCheck) title += '\nlast check: ' + t.lastCheck;
    c.title = title;
    return c;
  }

  // Why the active group takes the traffic, in a few words.
  const REASONS = {
    'primary-healthy': 'primary healthy',
    'failed-over': 'failed over',
    'nothing-healthy-trying-unknown': 'none healthy, trying Unknown',
    'all-unhealthy-trying-primary': 'all unhealthy, primary as last resort',
  };

  function activeClass(s) {
    if (s.reason === 'primary-healthy') return 'ok';
    if (s.reason === 'failed-over') return 'warn';
    return 'bad';
  }

  function schemeRow(s) {
    const tr = el('tr', 'scheme ' + activeClass(s));
    tr.dataset.scheme = s.name;
    tr.dataset.activeGroup = String(s.activeGroup);

    const name = el('td', 'c-name');
    const sname = el('span', 'sname', s.name);
    sname.title = s.name + '\nprimary: ' + s.primary.service + ' in ' + s.primary.cluster +
      '\nfailback.stableFor: ' + span(s.stableForMs);
    name.append(sname);
    tr.append(name);

    // One line: where the traffic goes, for how long, and why when it is not normal.
    const active = el('td', 'c-active');
    active.title = s.message;
    const label = s.activeGroup === 0 ? 'primary' : 'group ' + s.activeGroup;
    const pill = el('span', 'pill ' + activeClass(s), label);
    pill.dataset.role = 'active';
    active.append(pill);
    const where = (s.groups[s.activeGroup] || []).map((t) => t.cluster).join(', ');
    active.append(el('span', 'where', where));
    active.append(since(s.activeSince, 'since for'));
    if (activeClass(s) === 'bad') active.append(el('span', 'why', REASONS[s.reason] || s.reason));
    tr.append(active);

    const groups = el('td', 'c-groups');
    s.groups.forEach((g, i) => {
      const box = el('span', 'group' + (i === s.activeGroup ? ' active' : ''));
      box.append(el('span', 'glabel', i === 0 ? 'P' : String(i)));
      for (const t of g) box.append(targetChip(t, s));
      groups.append(box);
    });
    tr.append(groups);

    const clusters = s.groups.flat().map((t) => t.cluster);
    tr.dataset.search = (s.name + ' ' + clusters.join(' ')).toLowerCase();
    const healthy = s.groups.flat().every((t) => t.health === 'Healthy');
    tr.dataset.problem = String(s.activeGroup !== 0 || s.reason !== 'primary-healthy' || !healthy);
    return tr;
  }

  // Makes `body` hold one row per item of `items`, in their order: `rows` maps each
  // item's key to {sig, row}, and a row is rebuilt (by `build`) only when its item
  // changed. Keys no longer in `items` lose their rows.
  function reconcileRows(body, rows, items, key, build) {
    const seen = new Set();
    let previous = null;
    for (const item of items) {
      const k = key(item);
      seen.add(k);
      const sig = JSON.stringify(item);
      let entry = rows.get(k);
      if (!entry || entry.sig !== sig) {
        const row = build(item);
        if (entry) entry.row.replaceWith(row);
        entry = { sig: sig, row: row };
        rows.set(k, entry);
      }
      // Keep the document's order; moving a node in place costs nothing.
      const expected = previous ? previous.nextSibling : body.firstChild;
      if (expected !== entry.row) body.insertBefore(entry.row, expected);
      previous = entry.row;
    }
    for (const [k, entry] of rows) {
      if (!seen.has(k)) {
        entry.row.remove();
        rows.delete(k);
      }
    }
  }

  // Shows the rows whose search text holds every word of the filter and that `keep`
  // accepts; counts them in `shownId`, and shows `emptyId` when the filter hid them all.
  function filterRows(rows, keep, shownId, emptyId) {
    const words = view.filter.toLowerCase().split(/\s+/).filter(Boolean);
    let shown = 0;
    for (const { row } of rows.values()) {
      const text = row.dataset.search;
      const visible = words.every((w) => text.includes(w)) && keep(row);
      row.hidden = !visible;
      if (visible) shown += 1;
    }
    const total = rows.size;
    $(shownId).textContent = shown === total ? '(' + total + ')' : '(' + shown + ' of ' + total + ')';
    $(emptyId).hidden = shown > 0 || total === 0;
  }

  function renderSchemes(r) {
    reconcileRows(document.querySelector('#schemes tbody'), view.rows, r.schemes, (s) => s.name, schemeRow);
    applyFilter();
  }

  function applyFilter() {
    filterRows(view.rows, (row) => !view.problemsOnly || row.dataset.problem === 'true', 'shown', 'empty');
  }

  // --- services of every member cluster ----------------------------------------------
  function protectionChip(p) {
    const text = p.role === 'Primary' ? 'primary of ' + p.scheme : 'target of ' + p.scheme + ' (group ' + p.group + ')';
    const c = el('span', 'role ' + (p.role === 'Primary' ? 'Primary' : 'Target'), text);
    c.dataset.scheme = p.scheme;
    c.dataset.role = p.role;
    c.title = p.role === 'Primary'
      ? 'Scheme ' + p.scheme + ' protects it: when it is down, its traffic fails over'
      : 'Scheme ' + p.scheme + ' sends traffic here when the groups before group ' + p.group + ' are down';
    return c;
  }

  function serviceRow(s) {
    const tr = el('tr', 'service');
    const protectedBy = s.protection || [];
    tr.dataset.cluster = s.cluster;
    tr.dataset.service = s.service;
    tr.dataset.protected = String(protectedBy.length > 0);
    if (protectedBy.length === 0) tr.classList.add('unprotected');
    const name = el('td', 'sname', s.service);
    name.title = s.service + ' in ' + s.cluster + ' (' + s.protocol + ')';
    tr.append(el('td', 'cname', s.cluster), name, el('td', 'num', s.port));
    const by = el('td', 'c-protection');
    if (protectedBy.length === 0) {
      const none = el('span', 'role none', 'unprotected');
      none.title = 'No scheme names this service: when it fails, nothing moves its traffic';
      by.append(none);
    }
    for (const p of protectedBy) by.append(protectionChip(p));
    tr.append(by);
    tr.dataset.search = [s.cluster, s.service].concat(protectedBy.map((p) => p.scheme)).join(' ').toLowerCase();
    return tr;
  }

  function renderServices(r) {
    reconcileRows(document.querySelector('#services tbody'), view.serviceRows, r.services || [],
      (s) => s.cluster + ' ' + s.service, serviceRow);
    applyServiceFilter();
  }

  function applyServiceFilter() {
    filterRows(view.serviceRows, (row) => !view.unprotectedOnly || row.dataset.protected === 'false',
      'services-shown', 'services-empty');
  }

  // --- events and clusters ------------------------------------------------------------
  function eventSubject(e) {
    if (e.scheme) return e.scheme;
    if (e.cluster) return (e.service || '') + ' in ' + e.cluster;
    return 'configuration';
  }

  function renderEvents(r) {
    const ol = $('events');
    clear(ol);
    for (const e of r.events.slice(0, EVENTS_SHOWN)) {
      const li = el('li', 'event ' + e.kind);
      li.dataset.kind = e.kind;
      li.dataset.seq = String(e.seq);
      const head = el('div', 'ehead');
      const at = el('time', 'etime', clock(Date.parse(e.at)));
      at.dateTime = e.at;
      head.append(at, since(e.at, 'since ago'), el('span', 'kind', e.kind), el('span', 'esubject', eventSubject(e)));
      li.append(head, el('div', 'emsg', e.message));
      ol.append(li);
    }
    $('no-events').hidden = r.events.length > 0;
  }

  function renderClusters(r) {
    const body = document.querySelector('#clusters tbody');
    clear(body);
    for (const c of r.clusters) {
      const tr = el('tr');
      tr.dataset.cluster = c.name;
      const version = el('td', 'mono', (c.tableVersion || '').slice(0, 8));
      if (c.tableVersion) version.title = c.tableVersion;
      tr.append(el('td', 'cname', c.name), el('td', 'mono', c.gateway), el('td', 'num', c.services),
        el('td', 'num', c.primaries), version);
      body.append(tr);
    }
  }

  // --- the stream ---------------------------------------------------------------------
  function setConnection(state, text) {
    const conn = $('conn');
    conn.dataset.state = state;
    conn.textContent = text;
    document.body.classList.toggle('stale', state !== 'live');
  }

  function render(r) {
    view.report = r;
    renderHeader(r);
    renderSchemes(r);
    renderServices(r);
    renderEvents(r);
    renderClusters(r);
    document.body.dataset.version = r.version;
    setConnection('live', 'live · ' + clock(Date.now()));
    if (!view.rendered) {
      view.rendered = true;
      // The browser test measures load time up to here.
      performance.mark('detour:rendered');
    }
  }

  function connect() {
    const source = new EventSource(STREAM);
    source.addEventListener('status', (msg) => {
      let report;
      try {
        report = JSON.parse(msg.data);
      } catch (e) {
        setConnection('error', 'unreadable update');
        return;
      }
      render(report);
    });
    source.onerror = () => {
      const last = view.report ? ' (shown: ' + clock(Date.parse(view.report.generatedAt)) + ')' : '';
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (an HTTP error, not a dropped connection): try again.
        setConnection('error', 'disconnected' + last);
        setTimeout(connect, RETRY_MS);
      } else {
        setConnection('reconnecting', 'reconnecting…' + last);
      }
    };
  }

  function start() {
    $('filter').addEventListener('input', (e) => {
      view.filter = e.target.value;
      applyFilter();
      applyServiceFilter();
    });
    $('problems').addEventListener('change', (e) => {
      view.problemsOnly = e.target.checked;
      applyFilter();
    });
    $('unprotected').addEventListener('change', (e) => {
      view.unprotectedOnly = e.target.checked;
      applyServiceFilter();
    });
    setInterval(tick, 1000);
    connect();
  }

  start();
})();
