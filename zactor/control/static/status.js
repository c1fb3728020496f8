// zactor's status page: fetches /status.json from the head that served it, every
// REFRESH_MS, and draws the tables. Plain DOM, no library, nothing from elsewhere.
// Every text goes in through textContent: actor names are the users' strings.
"use strict";
(function () {
  const REFRESH_MS = 2000;
  const DASH = "\u2013";
  let latest = null;

  function number(n) {
    return n === null || n === undefined ? DASH : Math.round(n).toLocaleString("en-US");
  }
  function rate(n) {
    if (n === null || n === undefined) return DASH;
    return n >= 100 ? Math.round(n).toLocaleString("en-US") : n.toFixed(1);
  }
  function percent(n) {
    return n === null || n === undefined ? DASH : n.toFixed(1) + " %";
  }
  function micros(us) {
    if (us === null || us === undefined) return DASH;
    if (us >= 1e6) return (us / 1e6).toFixed(2) + " s";
    if (us >= 1000) return (us / 1000).toFixed(us >= 10000 ? 1 : 2) + " ms";
    return us >= 10 ? us.toFixed(0) + " \u00b5s" : us.toFixed(1) + " \u00b5s";
  }
  function bytes(n) {
    if (n === null || n === undefined) return DASH;
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }
  function duration(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    const d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600);
    const m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    return m ? m + "m " + s + "s" : s + "s";
  }

  // A row of cells: each [text, column] with column naming the data-col attribute
  // (and "num" columns right-aligned), or [text, column, extra class].
  function row(cells, attrs) {
    const tr = document.createElement("tr");
    for (const [name, value] of Object.entries(attrs || {})) tr.setAttribute(name, value);
    for (const [text, column, extra] of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      td.dataset.col = column;
      if (extra) td.className = extra;
      tr.appendChild(td);
    }
    return tr;
  }
  function fill(tableId, rows, emptyText) {
    const body = document.querySelector("#" + tableId + " tbody");
    const columns = document.querySelectorAll("#" + tableId + " thead th").length;
    body.replaceChildren(...rows);
    if (!rows.length) {
      const td = document.createElement("td");
      td.colSpan = columns;
      td.className = "empty";
      td.textContent = emptyText;
      const tr = document.createElement("tr");
      tr.appendChild(td);
      body.appendChild(tr);
    }
  }
  function card(value, label) {
    const div = document.createElement("div");
    div.className = "card";
    const v = document.createElement("div");
    v.className = "value";
    v.textContent = value;
    const l = document.createElement("div");
    l.className = "label";
    l.textContent = label;
    div.append(v, l);
    return div;
  }
  function stateClass(state) {
    return "state state-" + String(state).replace(/[^a-z-]/gi, "-");
  }

  function render(data) {
    latest = data;
    const c = data.cluster, head = data.head;
    const up = head.started_at ? ", up " + duration(data.taken_at - head.started_at) : "";
    document.getElementById("head-info").textContent =
      "head pid " + head.pid + " at " + head.address + up;
    document.getElementById("updated").textContent =
      "updated " + new Date(data.taken_at * 1000).toLocaleTimeString("en-GB");
    document.getElementById("summary").replaceChildren(
      card(number(c.actors_alive), "actors alive"),
      card(number(c.actors), "actors"),
      card(number(c.workers_answering) + " / " + number(c.workers), "workers answering"),
      card(number(c.drivers), "drivers"),
      card(rate(c.calls_per_s), "calls/s"),
      card(rate(c.created_per_s), "creations/s"),
      card(number(c.worker_deaths), "worker deaths")
    );
    fill("nodes", data.nodes.map((n) => row([
      [n.node_id + (n.head ? " (head)" : ""), "node"],
      [n.host || DASH, "host"],
      [n.state || "alive", "state"],
      [n.heartbeat_age_s == null ? DASH : n.heartbeat_age_s.toFixed(1) + " s ago", "heartbeat", "num"],
      [number(n.workers), "workers", "num"],
      [number(n.drivers), "drivers", "num"],
      [percent(n.cpu_percent), "cpu", "num"],
      [bytes(n.rss_bytes), "rss", "num"],
      [rate(n.calls_per_s), "calls_per_s", "num"],
      [number(n.calls), "calls", "num"],
    ], {"data-node": n.node_id})), "no nodes");
    fill("workers", data.workers.map((w) => row([
      [w.worker_id, "worker"],
      [w.node_id, "node"],
      [String(w.pid), "pid", "num"],
      [w.error ? "not answering: " + w.error : "answering", "state",
        stateClass(w.error ? "not-answering" : "answering")],
      [number(w.actors), "actors", "num"],
      [percent(w.cpu_percent), "cpu", "num"],
      [bytes(w.rss_bytes), "rss", "num"],
      [rate(w.calls_per_s), "calls_per_s", "num"],
      [number(w.calls), "calls", "num"],
    ], {"data-worker": w.worker_id})), "no workers registered");
    drawActors();
  }

  function drawActors() {
    if (!latest) return;
    const data = latest;
    const words = document.getElementById("filter").value.trim().toLowerCase().split(/\s+/);
    const shown = data.actors.filter((a) => {
      const text = [a.name, a.class_name, a.worker_id, a.state, a.actor_id].join(" ").toLowerCase();
      return words.every((word) => text.includes(word));
    });
    fill("actors", shown.map((a) => row([
      [String(a.actor_id), "actor_id", "num"],
      [a.name || DASH, "name"],
      [a.class_name, "class"],
      [a.worker_id || DASH, "worker"],
      [a.state, "state", stateClass(a.state)],
      [number(a.calls), "calls", "num"],
      [number(a.errors), "errors", "num"],
      [number(a.queued), "queued", "num"],
      [micros(a.p50_us), "p50", "num"],
      [micros(a.p99_us), "p99", "num"],
      [number(a.restarts), "restarts", "num"],
    ], {"data-actor-id": String(a.actor_id)})),
      data.actors.length ? "no actor matches the filter" : "no actors");
    document.getElementById("actor-count").textContent =
      "(" + number(shown.length) + " of " + number(data.cluster.actors) + ")";
    const note = document.getElementById("actors-note");
    note.hidden = !data.actors_not_shown;
    note.textContent = data.actors_not_shown
      ? number(data.actors_not_shown) + " more actors are not listed here: " +
        "`zactor status --json` lists them all."
      : "";
  }

  async function refresh() {
    const problem = document.getElementById("problem");
    try {
      const response = await fetch("/status.json", {cache: "no-store"});
      if (!response.ok) throw new Error(response.status + " " + (await response.text()));
      render(await response.json());
      problem.hidden = true;
    } catch (err) {
      problem.hidden = false;
      problem.textContent = "The head did not answer (" + err.message + "); the figures " +
        "below are from the last answer. Trying again every " + REFRESH_MS / 1000 + " s.";
    } finally {
      setTimeout(refresh, REFRESH_MS);
    }
  }

  document.getElementById("filter").addEventListener("input", drawActors);
  refresh();
})();
