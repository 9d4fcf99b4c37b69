// offboard operator console: the live view. Hand-written, no dependencies, no build step; served from the binary
// under `Content-Security-Policy: default-src 'self'`, so it builds the DOM with textContent only (no innerHTML).
"use strict";

(function () {
  const table = document.getElementById("feed");
  if (!table) {
    return;
  }
  const body = table.tBodies[0];
  const state = document.getElementById("feed-state");
  // Access rows by txn, delivery cells by jti: a delivery event updates the cell its change queued.
  const rowsByTxn = new Map();
  const cellsByJti = new Map();
  // Deliveries seen before the change that queued them (a viewer that resumed mid-change).
  const early = new Map();

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) {
      e.className = cls;
    }
    if (text !== undefined && text !== null) {
      e.textContent = String(text);
    }
    return e;
  }

  function time(t) {
    return t ? t.replace("T", " ").replace("Z", "") : "";
  }

  function deliveryText(d) {
    const event = (d.event || "").split("/").pop();
    const who = (d.audience || d.stream_id) + (d.method ? " (" + d.method + ")" : "") + (event ? " " + event : "");
    if (d.status === "delivered") {
      return who + ": delivered" + (d.latency_ms !== null && d.latency_ms !== undefined ? " in " + d.latency_ms + " ms" : "");
    }
    return who + ": " + (d.status || "queued");
  }

  function setDelivery(cell, d) {
    cell.textContent = deliveryText(d);
    cell.dataset.status = d.status || "queued";
    cell.className = "delivery " + (d.status || "queued");
  }

  function addDelivery(list, d) {
    const cell = el("li", "delivery");
    cell.dataset.stream = d.stream_id;
    cell.dataset.jti = d.jti;
    setDelivery(cell, d);
    cellsByJti.set(d.jti, cell);
    list.appendChild(cell);
    return cell;
  }

  function prepend(row) {
    body.insertBefore(row, body.firstChild);
    while (body.rows.length > 500) {
      body.deleteRow(body.rows.length - 1);
    }
  }

  function access(e) {
    const row = el("tr", "access " + (e.action || "").replace(/\./g, "-"));
    row.dataset.seq = e.seq;
    row.dataset.user = e.user_name || e.user_id || "";
    row.dataset.action = e.action;
    if (e.txn) {
      row.dataset.txn = e.txn;
    }
    row.appendChild(el("td", "time", time(e.time)));
    row.appendChild(el("td", "user", e.user_name || e.user_id));
    const what = el("td", "ended-by", e.ended_by);
    if (e.reason) {
      what.appendChild(el("span", "reason", e.reason));
    }
    row.appendChild(what);
    const gen = e.generation === null || e.generation === undefined ? "" :
      (e.previous_generation !== null && e.previous_generation !== undefined ? e.previous_generation + " → " : "") + e.generation;
    row.appendChild(el("td", "generation", gen));
    row.appendChild(el("td", "actor", e.actor));
    const cell = el("td", "streams");
    const list = el("ul", "deliveries");
    for (const d of e.deliveries || []) {
      addDelivery(list, d);
    }
    cell.appendChild(list);
    row.appendChild(cell);
    if (e.txn) {
      rowsByTxn.set(e.txn, list);
      for (const d of early.get(e.txn) || []) {
        delivery(d);
      }
      early.delete(e.txn);
    }
    prepend(row);
  }

  function delivery(e) {
    const d = {
      stream_id: e.stream_id,
      audience: e.audience,
      method: e.method,
      event: e.event,
      jti: e.jti,
      status: e.outcome,
      latency_ms: e.latency_ms,
    };
    let cell = cellsByJti.get(e.jti);
    if (!cell) {
      const list = rowsByTxn.get(e.txn);
      if (!list) {
        const waiting = early.get(e.txn) || [];
        waiting.push(e);
        early.set(e.txn, waiting);
        return;
      }
      cell = addDelivery(list, d);
    }
    setDelivery(cell, d);
  }

  function presented(e) {
    const row = el("tr", "presented");
    row.dataset.seq = e.seq;
    row.dataset.user = e.user_name || e.user_id || "";
    row.appendChild(el("td", "time", time(e.time)));
    row.appendChild(el("td", "user", e.user_name || e.user_id));
    row.appendChild(el("td", "ended-by", "revoked token presented (" + e.via + "): " + e.reason));
    row.appendChild(el("td", "generation", ""));
    row.appendChild(el("td", "actor", e.actor));
    row.appendChild(el("td", "streams", "client " + e.client_id));
    prepend(row);
  }

  function handler(fn) {
    return function (msg) {
      try {
        fn(JSON.parse(msg.data));
      } catch (err) {
        console.error("live view: bad event", err);
      }
    };
  }

  const source = new EventSource("/console/events");
  source.addEventListener("access", handler(access));
  source.addEventListener("delivery", handler(delivery));
  source.addEventListener("presented", handler(presented));
  source.addEventListener("signed-out", function () {
    source.close();
    window.location.assign("/console/sign-in");
  });
  source.onopen = function () {
    state.textContent = "live";
    state.className = "state live";
  };
  source.onerror = function () {
    if (source.readyState === EventSource.CLOSED) {
      // Refused (the session ended): the page itself redirects to the sign-in form.
      window.location.reload();
      return;
    }
    state.textContent = "reconnecting…";
    state.className = "state reconnecting";
  };
})();
