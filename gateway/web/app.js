// Operator dashboard: renders the live feed of /ws (interfaces.md §8). No framework, no build step.
// Every value from the feed is written with textContent (never innerHTML), so payloads cannot inject markup.
"use strict";

(function () {
  const MAX_JOURNEYS = 15;
  const MAX_EVENTS = 30;
  const TRACK_STALE_MS = 60000; // a track with no news for this long is no longer drawn
  const POSITION_FRESH_MS = 3000; // a position older than this is not used to place a dot
  const RECONNECT_MIN_MS = 1000;
  const RECONNECT_MAX_MS = 10000;
  const SILENCE_MS = 40000; // heartbeat is every 15 s: no message for this long = reconnect

  const state = {
    site: null,
    version: null,
    zones: new Map(), // id -> {id, name, role}
    zoneByName: new Map(), // name -> zone
    door: null,
    health: null,
    metrics: null,
    tracks: new Map(), // tid -> {tid, auth, dwell, zone, x, y, posAt, seenAt, pending}
    journeys: [],
    gateEvents: [],
    accEvents: [],
    messages: 0,
    dropped: 0,
    connected: false,
    lastMessageAt: 0,
    bounds: null, // fitted position bounds {x0, x1, y0, y1}
  };
  window.gatewayDashboard = { state: state };

  const $ = (id) => document.getElementById(id);

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function clock(ms) {
    if (!ms) return "";
    const d = new Date(ms);
    return d.toLocaleTimeString([], { hour12: false });
  }

  function fmtMs(ms) {
    if (ms === undefined || ms === null) return "";
    return ms >= 1000 ? (ms / 1000).toFixed(1) + " s" : ms + " ms";
  }

  function fmtUs(us) {
    if (us === undefined || us === null) return "—";
    return us >= 1000 ? (us / 1000).toFixed(1) + " ms" : us + " µs";
  }

  function setBadge(node, text, cls) {
    node.textContent = text;
    node.className = "badge " + cls;
  }

  // ---- connection -------------------------------------------------------------------------------
  let socket = null;
  let retryMs = RECONNECT_MIN_MS;
  let retryTimer = null;

  function feedUrl() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    return proto + "//" + location.host + "/ws";
  }

  function connect() {
    retryTimer = null;
    setBadge($("conn"), "connecting", "conn-connecting");
    socket = new WebSocket(feedUrl());
    socket.onopen = function () {
      state.connected = true;
      retryMs = RECONNECT_MIN_MS;
      setBadge($("conn"), "live", "conn-live");
    };
    socket.onmessage = function (event) {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (err) {
        return;
      }
      state.messages += 1;
      state.lastMessageAt = Date.now();
      handle(message);
    };
    socket.onclose = function (event) {
      state.connected = false;
      socket = null;
      const why = event.code === 1013 ? "too many clients" : "closed " + event.code;
      setBadge($("conn"), "reconnecting (" + why + ")", "conn-reconnecting");
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    if (retryTimer !== null) return;
    retryTimer = setTimeout(connect, retryMs);
    retryMs = Math.min(RECONNECT_MAX_MS, retryMs * 2);
  }

  setInterval(function () {
    // a half-open connection never fires onclose: the heartbeat proves the feed is alive
    if (socket && state.connected && Date.now() - state.lastMessageAt > SILENCE_MS) socket.close();
  }, 5000);

  // ---- feed messages ----------------------------------------------------------------------------
  const handlers = {
    hello: onHello,
    health: onHealth,
    heartbeat: function () {},
    dropped: function (data) {
      state.dropped += data.count || 0;
    },
    door: onDoor,
    journey: onJourney,
    zone: onZone,
    track: onTrack,
    position: onPosition,
    gate: onGate,
    acc: onAcc,
    metrics: onMetrics,
  };

  function handle(message) {
    const handler = handlers[message.kind];
    if (handler && message.data) handler(message.data, message.ts || Date.now());
    scheduleRender();
  }

  function onHello(data) {
    state.site = data.site;
    state.version = data.version;
    state.zones = new Map();
    state.zoneByName = new Map();
    Object.keys(data.zones || {}).forEach(function (id) {
      const zone = { id: Number(id), name: data.zones[id].name, role: data.zones[id].role };
      state.zones.set(zone.id, zone);
      state.zoneByName.set(zone.name, zone);
    });
    state.tracks = new Map(); // whatever we had may be stale after a reconnect
    if (data.door) state.door = data.door;
    if (data.health) state.health = data.health;
  }

  function onHealth(data) {
    state.health = data;
  }

  function onDoor(data) {
    state.door = data;
  }

  function track(tid, ts) {
    let t = state.tracks.get(tid);
    if (!t) {
      t = { tid: tid, auth: false, dwell: 0, zone: null, x: null, y: null, posAt: 0, pending: false };
      state.tracks.set(tid, t);
    }
    t.seenAt = Date.now();
    t.ts = ts;
    return t;
  }

  function onTrack(data, ts) {
    if (data.t === "lost") {
      state.tracks.delete(data.tid);
      return;
    }
    if (data.t === "stitch" && data.prev_tid !== undefined) {
      const prev = state.tracks.get(data.prev_tid);
      state.tracks.delete(data.prev_tid);
      const t = track(data.tid, ts);
      if (prev) t.zone = prev.zone;
    }
    const t = track(data.tid, ts);
    t.auth = !!data.auth;
    t.dwell = data.dwell_ms || 0;
    t.pending = data.t === "pending";
  }

  function onZone(data, ts) {
    const t = track(data.tid, ts);
    t.auth = !!data.auth;
    if (data.total_dwell_ms !== undefined) t.dwell = data.total_dwell_ms;
    if (data.t === "zone_entry") t.zone = data.z;
    else if (data.t === "zone_exit" && t.zone === data.z) t.zone = null;
    t.pending = false;
  }

  function onPosition(data, ts) {
    const t = track(data.tid, ts);
    t.x = data.x;
    t.y = data.y;
    t.posAt = Date.now();
    const b = state.bounds;
    if (!b) state.bounds = { x0: data.x - 1, x1: data.x + 1, y0: data.y - 1, y1: data.y + 1 };
    else {
      b.x0 = Math.min(b.x0, data.x - 0.5);
      b.x1 = Math.max(b.x1, data.x + 0.5);
      b.y0 = Math.min(b.y0, data.y - 0.5);
      b.y1 = Math.max(b.y1, data.y + 0.5);
    }
  }

  function onJourney(data, ts) {
    state.journeys.unshift(data);
    if (state.journeys.length > MAX_JOURNEYS) state.journeys.length = MAX_JOURNEYS;
    if (data.t1 && data.out !== "in_progress") (data.tids || []).forEach((tid) => state.tracks.delete(tid));
  }

  function pushEvent(list, item) {
    list.unshift(item);
    if (list.length > MAX_EVENTS) list.length = MAX_EVENTS;
  }

  function onGate(data, ts) {
    pushEvent(state.gateEvents, data);
    if (["open", "closed", "moving", "unknown"].indexOf(data.state) >= 0 && data.src === "rs485") {
      state.door = Object.assign({}, state.door || {}, { status: data.state, source: "rs485" });
    }
  }

  function onAcc(data) {
    pushEvent(state.accEvents, data);
  }

  function onMetrics(data) {
    state.metrics = data;
  }

  // ---- rendering ----------------------------------------------------------------------------------
  let renderQueued = false;

  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(function () {
      renderQueued = false;
      render();
    });
  }

  function render() {
    sweepTracks();
    $("site").textContent = state.site || "—";
    $("version").textContent = state.version ? "v" + state.version : "";
    document.title = "gateway " + (state.site || "");
    $("last-message").textContent = state.lastMessageAt ? clock(state.lastMessageAt) : "";
    renderHealth();
    renderDoor();
    renderCounters();
    renderJourneys();
    renderEvents($("gate-events"), state.gateEvents, gateLine);
    renderEvents($("acc-events"), state.accEvents, accLine);
    renderTracks();
    drawStore();
    $("feed-stats").textContent =
      state.messages + " messages" + (state.dropped ? ", " + state.dropped + " dropped for this browser" : "");
  }

  function sweepTracks() {
    const now = Date.now();
    state.tracks.forEach(function (t, tid) {
      if (now - t.seenAt > TRACK_STALE_MS) state.tracks.delete(tid);
    });
  }

  function renderHealth() {
    const h = state.health;
    const status = h ? h.status : "unknown";
    setBadge($("health-status"), status, "state-" + status);
    const list = $("components");
    list.replaceChildren();
    if (!h || !h.components) return;
    Object.keys(h.components).forEach(function (name) {
      const c = h.components[name];
      const li = el("li");
      li.appendChild(el("span", name));
      li.appendChild(el("span", componentDetail(name, c), "detail"));
      li.appendChild(el("span", c.state, "badge state-" + c.state));
      list.appendChild(li);
    });
  }

  function componentDetail(name, c) {
    if (c.detail) return c.detail;
    if (name === "tracker" && c.live_tracks !== undefined) return c.live_tracks + " tracks, queue " + c.event_queue_depth;
    if (name === "mqtt_ingress" && c.connected !== undefined) return c.connected ? "connected" : "disconnected";
    if (name === "gate" && c.mode) return c.mode + (c.connected === false ? ", not connected" : "");
    if (name === "rs485" && c.door) return "door " + c.door;
    if (name === "acc" && c.connections !== undefined) return c.connections + " connections";
    if (name === "journal" && c.write_errors) return c.write_errors + " write errors";
    if (name === "mqtt_egress" && c.backlog) return "backlog " + c.backlog;
    if (name === "http" && c.ws_clients !== undefined) return c.ws_clients + " feed client" + (c.ws_clients === 1 ? "" : "s");
    return "";
  }

  function renderDoor() {
    const d = state.door;
    const status = d && d.status ? d.status : "unknown";
    const node = $("door-status");
    node.textContent = status;
    node.className = "door door-" + status;
    const parts = [];
    if (d && d.source) parts.push("source " + d.source);
    if (d && d.fault) parts.push("fault " + d.fault);
    if (d && d.alarm) parts.push("alarm " + d.alarm);
    $("door-detail").textContent = parts.join(" · ");
  }

  function renderCounters() {
    const m = state.metrics;
    const rows = [
      ["events / s", m && m.events_per_sec !== undefined ? Number(m.events_per_sec).toFixed(1) : "—"],
      ["events total", m ? m.events_total : "—"],
      ["active tracks", m ? m.active_tracks : state.tracks.size],
      ["authorized tracks", m ? m.authorized_tracks : "—"],
      ["gate commands", m ? m.gate_cmds : "—"],
      ["event latency p50 / p99", m ? fmtUs(m.lat_p50_us) + " / " + fmtUs(m.lat_p99_us) : "—"],
      ["gate latency p99", m ? fmtUs(m.gate_lat_p99_us) : "—"],
      ["event queue", m ? m.event_queue_depth + " (" + m.event_queue_utilization_pct + " %)" : "—"],
      ["gate queue", m ? String(m.gate_queue_depth) : "—"],
    ];
    const dl = $("counters");
    dl.replaceChildren();
    rows.forEach(function (row) {
      dl.appendChild(el("dt", row[0]));
      dl.appendChild(el("dd", row[1] === undefined ? "—" : row[1]));
    });
  }

  function renderJourneys() {
    const body = $("journeys").tBodies[0];
    body.replaceChildren();
    state.journeys.forEach(function (j) {
      const tr = el("tr");
      tr.appendChild(el("td", clock(j.t1 || j.t0)));
      const out = el("td");
      out.appendChild(el("span", j.out, "badge out-" + j.out));
      tr.appendChild(out);
      tr.appendChild(el("td", (j.tids || []).join(", ")));
      tr.appendChild(el("td", j.auth ? "yes" : "no"));
      tr.appendChild(el("td", j.acc ? "yes" : "no"));
      tr.appendChild(el("td", fmtMs(j.dwell)));
      tr.appendChild(el("td", j.gate_open ? "opened" : j.gate_cmd ? "sent" : j.gate_was_open ? "was open" : "—"));
      tr.appendChild(el("td", (j.jid || "").slice(-12), "jid"));
      tr.title = j.jid || "";
      body.appendChild(tr);
    });
  }

  function gateLine(g) {
    const more = [];
    if (g.tid !== undefined) more.push("track " + g.tid);
    if (g.src) more.push(g.src);
    if (g.reason) more.push(g.reason);
    if (g.send_latency_us !== undefined) more.push("send " + fmtUs(g.send_latency_us));
    if (g.recv_to_wire_us !== undefined) more.push("recv→wire " + fmtUs(g.recv_to_wire_us));
    return { ts: g.ts, what: g.state, more: more.join(" · ") };
  }

  function accLine(a) {
    const more = [];
    if (a.pos) more.push(a.pos);
    if (a.tid !== undefined) more.push("track " + a.tid);
    if (a.receipt) more.push("receipt " + a.receipt);
    if (a.reason) more.push(a.reason);
    if (a.ip) more.push(a.ip);
    return { ts: a.ts, what: a.t, more: more.join(" · ") };
  }

  function renderEvents(list, items, line) {
    list.replaceChildren();
    items.forEach(function (item) {
      const l = line(item);
      const li = el("li", null, "ev-" + l.what);
      li.appendChild(el("span", clock(l.ts), "time"));
      li.appendChild(el("span", l.what, "what"));
      li.appendChild(el("span", l.more, "more"));
      list.appendChild(li);
    });
  }

  function renderTracks() {
    const body = $("tracks").tBodies[0];
    body.replaceChildren();
    const tracks = Array.from(state.tracks.values()).sort((a, b) => a.tid - b.tid);
    $("track-count").textContent = tracks.length + " live track" + (tracks.length === 1 ? "" : "s");
    tracks.slice(0, 20).forEach(function (t) {
      const tr = el("tr");
      tr.appendChild(el("td", t.tid));
      tr.appendChild(el("td", t.pending ? "(pending)" : t.zone || ""));
      tr.appendChild(el("td", t.auth ? "yes" : "no"));
      tr.appendChild(el("td", fmtMs(t.dwell)));
      body.appendChild(tr);
    });
  }

  // ---- store map: a schematic by zone role (the exit is at the top, as Xovis y grows to it) ------
  const DOOR_FILL = { open: "#dcfce7", moving: "#fef3c7", closed: "#e5e7eb", unknown: "#fee2e2" };

  function layout(w, h) {
    const byRole = {};
    state.zones.forEach(function (z) {
      (byRole[z.role] = byRole[z.role] || []).push(z);
    });
    const boxes = new Map(); // zone name -> {x, y, w, h, zone}
    const lines = [];
    const pad = 16;
    const row = function (zones, top, height, left, right) {
      if (!zones || !zones.length) return;
      const gap = 10;
      const width = Math.min(120, (right - left - gap * (zones.length - 1)) / zones.length);
      zones.forEach(function (z, i) {
        boxes.set(z.name, { x: left + i * (width + gap), y: top, w: width, h: height, zone: z });
      });
    };
    const lineAt = function (zones, y, style) {
      (zones || []).forEach(function (z, i) {
        lines.push({ y: y + i * 6, zone: z, style: style });
      });
    };
    lineAt(byRole.exit_line, h * 0.07, "#b91c1c");
    row(byRole.gate, h * 0.1, h * 0.15, w * 0.25, w * 0.75);
    lineAt(byRole.approach_line, h * 0.3, "#6b7280");
    const store = { x: pad, y: h * 0.34, w: w - 2 * pad, h: h * 0.52 };
    row(byRole.dwell, store.y + 14, h * 0.1, w * 0.62, w - 2 * pad);
    row(byRole.pos, store.y + h * 0.22, h * 0.13, 2 * pad, w * 0.8);
    row(byRole.other, store.y + h * 0.39, h * 0.09, 2 * pad, w - 2 * pad);
    lineAt(byRole.entry_line, h * 0.92, "#15803d");
    return { boxes: boxes, lines: lines, store: store, storeZones: byRole.store || [] };
  }

  function drawStore() {
    const canvas = $("store");
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || canvas.width;
    const h = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
      canvas.width = Math.round(w * ratio);
      canvas.height = Math.round(h * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.font = "12px system-ui, sans-serif";
    ctx.textBaseline = "top";
    const map = layout(w, h);

    // store area
    ctx.fillStyle = "#ffffff";
    ctx.strokeStyle = "#9ca3af";
    ctx.lineWidth = 1;
    ctx.fillRect(map.store.x, map.store.y, map.store.w, map.store.h);
    ctx.strokeRect(map.store.x, map.store.y, map.store.w, map.store.h);
    ctx.fillStyle = "#6b7280";
    const storeName = map.storeZones.length ? map.storeZones.map((z) => z.name).join(", ") : "store";
    ctx.fillText(storeName, map.store.x + 6, map.store.y + 4);

    // lines
    map.lines.forEach(function (line) {
      ctx.strokeStyle = line.style;
      ctx.setLineDash([8, 5]);
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.moveTo(w * 0.2, line.y);
      ctx.lineTo(w * 0.8, line.y);
      ctx.stroke();
      ctx.setLineDash([]);
      ctx.fillStyle = line.style;
      ctx.fillText(line.zone.name + " (" + line.zone.role.replace("_", " ") + ")", w * 0.2, line.y - 15);
    });

    // zones, with their occupancy
    const occupancy = new Map();
    state.tracks.forEach(function (t) {
      if (t.zone) occupancy.set(t.zone, (occupancy.get(t.zone) || 0) + 1);
    });
    const door = state.door && state.door.status ? state.door.status : "unknown";
    map.boxes.forEach(function (box, name) {
      const role = box.zone.role;
      ctx.fillStyle = role === "gate" ? DOOR_FILL[door] || DOOR_FILL.unknown : role === "pos" ? "#eff6ff" : "#f5f3ff";
      ctx.strokeStyle = role === "gate" ? "#374151" : role === "pos" ? "#1d4ed8" : "#7c3aed";
      ctx.lineWidth = 1.5;
      ctx.fillRect(box.x, box.y, box.w, box.h);
      ctx.strokeRect(box.x, box.y, box.w, box.h);
      ctx.fillStyle = "#111827";
      const count = occupancy.get(name);
      ctx.fillText(name + (count ? " · " + count : ""), box.x + 4, box.y + 3);
      if (role === "gate") ctx.fillText("door " + door, box.x + 4, box.y + 18);
    });

    // tracks: in their zone box, else at their (fitted) position, else along the store's bottom
    const now = Date.now();
    const slots = new Map();
    let loose = 0;
    state.tracks.forEach(function (t) {
      let x;
      let y;
      const box = t.zone ? map.boxes.get(t.zone) : null;
      if (box) {
        const i = slots.get(t.zone) || 0;
        slots.set(t.zone, i + 1);
        const perRow = Math.max(1, Math.floor((box.w - 8) / 18));
        x = box.x + 12 + (i % perRow) * 18;
        y = box.y + box.h - 12 - Math.floor(i / perRow) * 18;
      } else if (t.x !== null && now - t.posAt < POSITION_FRESH_MS && state.bounds) {
        const b = state.bounds;
        x = map.store.x + ((t.x - b.x0) / (b.x1 - b.x0 || 1)) * map.store.w;
        y = h * 0.04 + (1 - (t.y - b.y0) / (b.y1 - b.y0 || 1)) * h * 0.9;
      } else {
        x = map.store.x + 20 + (loose % 30) * 22;
        y = map.store.y + map.store.h - 16 - Math.floor(loose / 30) * 20;
        loose += 1;
      }
      ctx.beginPath();
      ctx.fillStyle = t.auth ? "#15803d" : "#1d4ed8";
      ctx.globalAlpha = t.pending ? 0.4 : 1;
      ctx.arc(x, y, 6, 0, Math.PI * 2);
      ctx.fill();
      ctx.globalAlpha = 1;
      ctx.fillStyle = "#111827";
      ctx.fillText(String(t.tid), x + 8, y - 6);
    });
  }

  window.addEventListener("resize", scheduleRender);
  setInterval(scheduleRender, 1000); // ages, stale tracks and the clock move without messages
  render();
  connect();
})();
