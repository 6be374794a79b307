"use strict";
// The call page's per-channel player: one waveform lane per channel drawn from the call's
// peaks, solo and mute through the Web Audio API (the ranged audio endpoint stays the only
// source of sound), ±10 s, skip-silence, speed, keyboard shortcuts, the #t= deep link and
// annotations as markers on the lanes.
(function () {
  const ui = window.tallenne;
  const player = document.getElementById("player");
  if (!player) return;
  const recordingId = player.dataset.recording;
  const base = "/api/v1/recordings/" + encodeURIComponent(recordingId);
  const audio = document.getElementById("audio");
  const play = document.getElementById("play");
  const speed = document.getElementById("speed");
  const skip = document.getElementById("skip-silence");
  const lanes = Array.from(document.querySelectorAll("#lanes .lane"));
  const lanesBox = document.getElementById("lanes");
  const SILENCE_LEVEL = 0.02;
  const SKIP_AFTER_S = 2;
  let peaks = null;
  let silences = [];
  let notes = [];
  let loadedFor = null;
  let startAt = deepLink();

  function deepLink() {
    const match = /(?:^#|&)t=([0-9]+(?:\.[0-9]+)?)/.exec(window.location.hash);
    return match ? parseFloat(match[1]) : null;
  }

  function total() {
    return isFinite(audio.duration) && audio.duration > 0 ? audio.duration
      : parseFloat(player.dataset.duration) || 0;
  }

  // --- lanes ---------------------------------------------------------------------------
  function draw() {
    if (!peaks) return;
    const length = total();
    lanes.forEach(function (lane, c) {
      const canvas = lane.querySelector("canvas");
      const width = Math.max(100, Math.round(canvas.clientWidth || 1000));
      if (canvas.width !== width) canvas.width = width;
      const context = canvas.getContext("2d");
      const channel = peaks.channels[c] || peaks.channels[0];
      const ticks = channel.max.length;
      const middle = canvas.height / 2;
      const played = length > 0 ? audio.currentTime / length * width : 0;
      const accent = getComputedStyle(canvas).color;
      context.clearRect(0, 0, width, canvas.height);
      for (let x = 0; x < width; x++) {
        const from = Math.floor(x * ticks / width);
        const to = Math.max(from + 1, Math.floor((x + 1) * ticks / width));
        let low = 0, high = 0;
        for (let i = from; i < to && i < ticks; i++) {
          if (channel.min[i] < low) low = channel.min[i];
          if (channel.max[i] > high) high = channel.max[i];
        }
        context.fillStyle = x < played ? accent : "#767f8a";
        const top = middle - Math.max(0.5, high * middle);
        context.fillRect(x, top, 1, Math.max(1, (high - low) * middle));
      }
      context.fillStyle = "#b3261e";
      for (const note of notes) {
        if (length > 0) context.fillRect(Math.round(note.at_s / length * width), 0, 2, canvas.height);
      }
    });
    lanesBox.dataset.markers = String(notes.length);
  }

  function findSilences() {
    const channels = peaks.channels;
    const ticks = channels.length ? channels[0].max.length : 0;
    const step = peaks.interval_ms / 1000;
    const found = [];
    let start = -1;
    for (let i = 0; i <= ticks; i++) {
      let quiet = i < ticks;
      for (let c = 0; quiet && c < channels.length; c++) {
        if (Math.max(-channels[c].min[i], channels[c].max[i]) >= SILENCE_LEVEL) quiet = false;
      }
      if (quiet && start < 0) start = i;
      if (!quiet && start >= 0) {
        if ((i - start) * step > SKIP_AFTER_S) found.push([start * step, i * step]);
        start = -1;
      }
    }
    return found;
  }

  function loadPeaks(reason) {
    if (loadedFor === reason) return;
    loadedFor = reason;
    fetch(base + "/peaks?reason=" + encodeURIComponent(reason),
          { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (found) {
        peaks = found;
        silences = findSilences();
        lanesBox.dataset.drawn = String(found.channels.length);
        lanesBox.dataset.silences = JSON.stringify(silences);
        draw();
      })
      .catch(function () { loadedFor = null; });
  }

  for (const lane of lanes) {
    lane.querySelector("canvas").addEventListener("click", function (event) {
      const box = event.currentTarget.getBoundingClientRect();
      if (total() > 0 && box.width > 0) {
        audio.currentTime = (event.clientX - box.left) / box.width * total();
        draw();
      }
    });
  }

  function onReason(reason) {
    loadPeaks(reason);
    if (startAt !== null) {
      audio.currentTime = startAt;
      startAt = null;
    }
  }
  document.addEventListener("tallenne:reason", function (event) { onReason(event.detail); });
  if (player.dataset.reason) onReason(player.dataset.reason);

  // --- solo and mute: element → splitter → one gain per channel → both ears ------------
  const graph = { context: null, gains: [] };
  const soloed = new Set();
  const muted = new Set();
  window.tallennePlayer = graph;

  function buildGraph() {
    if (graph.context || !window.AudioContext) return;
    const context = new AudioContext();
    const source = context.createMediaElementSource(audio);
    const count = Math.max(1, lanes.length);
    const splitter = context.createChannelSplitter(count);
    const merger = context.createChannelMerger(2);
    source.connect(splitter);
    for (let c = 0; c < count; c++) {
      const gain = context.createGain();
      splitter.connect(gain, c);
      gain.connect(merger, 0, 0);
      gain.connect(merger, 0, 1);
      graph.gains.push(gain);
    }
    merger.connect(context.destination);
    graph.context = context;
    applyGains();
  }

  function applyGains() {
    lanes.forEach(function (lane, c) {
      const on = soloed.size ? soloed.has(c) : !muted.has(c);
      if (graph.gains[c]) graph.gains[c].gain.value = on ? 1 : 0;
      lane.querySelector(".lane-solo").setAttribute("aria-pressed", String(soloed.has(c)));
      lane.querySelector(".lane-mute").setAttribute("aria-pressed", String(muted.has(c)));
    });
    player.dataset.gains = graph.gains.map(function (g) { return g.gain.value; }).join(",");
  }

  function toggle(set, c) {
    if (set.has(c)) set.delete(c); else set.add(c);
    buildGraph();
    if (graph.context && graph.context.state === "suspended") graph.context.resume();
    applyGains();
  }

  for (const button of document.querySelectorAll(".lane-solo")) {
    button.addEventListener("click", function () { toggle(soloed, parseInt(button.dataset.channel, 10)); });
  }
  for (const button of document.querySelectorAll(".lane-mute")) {
    button.addEventListener("click", function () { toggle(muted, parseInt(button.dataset.channel, 10)); });
  }
  audio.addEventListener("play", function () {
    buildGraph();
    if (graph.context && graph.context.state === "suspended") graph.context.resume();
  });

  // --- moving about ----------------------------------------------------------------------
  function jump(seconds) {
    audio.currentTime = Math.max(0, Math.min(total(), audio.currentTime + seconds));
    draw();
  }
  document.getElementById("back10").addEventListener("click", function () { jump(-10); });
  document.getElementById("fwd10").addEventListener("click", function () { jump(10); });

  audio.addEventListener("timeupdate", function () {
    if (skip.checked) {
      const now = audio.currentTime;
      for (const span of silences) {
        if (now >= span[0] && now < span[1] - 0.25) {
          audio.currentTime = span[1];
          break;
        }
      }
    }
    draw();
  });

  function stepSpeed(direction) {
    const options = Array.from(speed.options);
    const at = options.findIndex(function (o) { return o.selected; });
    const next = Math.max(0, Math.min(options.length - 1, at + direction));
    speed.value = options[next].value;
    speed.dispatchEvent(new Event("change"));
  }

  document.addEventListener("keydown", function (event) {
    const target = event.target;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (target.closest && target.closest("input, textarea, select, dialog, [contenteditable]")) return;
    if (event.key === " " && target.tagName !== "BUTTON" && target.tagName !== "SUMMARY") {
      event.preventDefault();
      play.click();
    } else if (event.key === "ArrowLeft") {
      event.preventDefault();
      jump(-10);
    } else if (event.key === "ArrowRight") {
      event.preventDefault();
      jump(10);
    } else if (event.key === "[") {
      stepSpeed(-1);
    } else if (event.key === "]") {
      stepSpeed(1);
    } else if (event.key === "m" && player.dataset.annotate === "yes") {
      addNote(ui.t("player.mark_default"), "team");
    }
  });

  // --- annotations -------------------------------------------------------------------
  const list = document.getElementById("annotations");
  const none = document.getElementById("annotations-none");
  const form = document.getElementById("annotation-form");
  const status = document.getElementById("annotation-status");

  function show() {
    if (!list) return;
    list.replaceChildren();
    for (const note of notes) {
      const li = ui.el("li", null, { "data-id": note.id });
      const at = ui.el("button", ui.clock(note.at_s), { "type": "button", "class": "plain mono" });
      at.addEventListener("click", function () { audio.currentTime = note.at_s; draw(); });
      li.appendChild(at);
      li.appendChild(ui.el("span", note.text));
      li.appendChild(ui.el("span", note.author + " · " + ui.t("visibility." + note.visibility),
                           { "class": "muted" }));
      if (player.dataset.annotate === "yes") {
        const remove = ui.el("button", ui.t("annotation.delete"), { "type": "button", "class": "plain" });
        remove.addEventListener("click", async function () {
          try {
            await ui.api("DELETE", base + "/annotations/" + encodeURIComponent(note.id));
            notes = notes.filter(function (n) { return n.id !== note.id; });
            show();
          } catch (error) {
            if (status) status.textContent = ui.t("error") + ": " + error.message;
          }
        });
        li.appendChild(remove);
      }
      list.appendChild(li);
    }
    if (none) none.hidden = notes.length > 0;
    draw();
    if (lanesBox) lanesBox.dataset.markers = String(notes.length);
  }

  async function addNote(text, visibility) {
    try {
      const saved = await ui.api("POST", base + "/annotations", {
        at_s: Math.round(audio.currentTime * 10) / 10, text: text, visibility: visibility,
      });
      notes.push(saved);
      notes.sort(function (a, b) { return a.at_s - b.at_s; });
      show();
      if (status) status.textContent = ui.t("saved");
      return true;
    } catch (error) {
      if (status) status.textContent = ui.t("error") + ": " + error.message;
      return false;
    }
  }

  if (form) {
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      const text = form.elements.text.value.trim();
      if (!text) return;
      if (await addNote(text, form.elements.visibility.value)) form.elements.text.value = "";
    });
  }

  if (player.dataset.readAnnotations === "yes") {
    ui.api("GET", base + "/annotations")
      .then(function (found) { notes = found.items; show(); })
      .catch(function () { /* the player works without them */ });
  }
  window.addEventListener("resize", draw);
})();
