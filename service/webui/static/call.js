"use strict";
// The call page: the reason prompt before the first play, the ranged-audio player with a
// seek bar and speed, and the evaluation form.
(function () {
  const ui = window.tallenne;
  const REASON_KEY = "tallenne.reason.";
  const LAST_REASON = "tallenne.reason";

  const player = document.getElementById("player");
  if (player) {
    const recordingId = player.dataset.recording;
    const audio = document.getElementById("audio");
    const play = document.getElementById("play");
    const seek = document.getElementById("seek");
    const clock = document.getElementById("clock");
    const speed = document.getElementById("speed");
    const shown = document.getElementById("reason-shown");
    const dialog = document.getElementById("reason-dialog");
    const reasonForm = document.getElementById("reason-form");
    const reasonInput = document.getElementById("reason");
    const reasonError = document.getElementById("reason-error");
    const audioError = document.getElementById("audio-error");
    let duration = parseFloat(player.dataset.duration) || 0;
    let dragging = false;

    function reason() {
      return sessionStorage.getItem(REASON_KEY + recordingId);
    }

    function attach(text) {
      sessionStorage.setItem(REASON_KEY + recordingId, text);
      sessionStorage.setItem(LAST_REASON, text);
      shown.textContent = text;
      // The browser asks this URL with Range headers as it plays and seeks.
      audio.src = "/api/v1/recordings/" + encodeURIComponent(recordingId) +
        "/audio?reason=" + encodeURIComponent(text);
      audio.playbackRate = parseFloat(speed.value);
      seek.disabled = false;
      // The per-channel player (player.js) draws its lanes from the peaks under this reason.
      player.dataset.reason = text;
      document.dispatchEvent(new CustomEvent("tallenne:reason", { detail: text }));
    }

    // The waveform: the call decoded once by the browser (at 8 kHz, enough for a picture
    // of who spoke when) and drawn as one peak per column; a click seeks there.
    const waveform = document.getElementById("waveform");
    const WAVEFORM_MAX_S = 2 * 3600;
    let peaks = null;

    function drawWaveform() {
      if (!peaks) return;
      const context = waveform.getContext("2d");
      const total = isFinite(audio.duration) && audio.duration > 0 ? audio.duration : duration;
      const played = total > 0 ? audio.currentTime / total * peaks.length : 0;
      const middle = waveform.height / 2;
      const accent = getComputedStyle(waveform).color;
      context.clearRect(0, 0, waveform.width, waveform.height);
      for (let i = 0; i < peaks.length; i++) {
        const h = Math.max(1, peaks[i] * middle);
        context.fillStyle = i < played ? accent : "#9aa3ad";
        context.fillRect(i, middle - h, 1, 2 * h);
      }
    }

    function loadWaveform(url) {
      if (peaks || !window.OfflineAudioContext || duration > WAVEFORM_MAX_S) return;
      fetch(url, { credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.arrayBuffer();
        })
        .then(function (data) { return new OfflineAudioContext(1, 1, 8000).decodeAudioData(data); })
        .then(function (decoded) {
          const samples = decoded.getChannelData(0);
          const columns = waveform.width;
          const step = Math.max(1, Math.floor(samples.length / columns));
          const found = new Float32Array(columns);
          let loudest = 0;
          for (let c = 0; c < columns; c++) {
            let peak = 0;
            const end = Math.min(samples.length, (c + 1) * step);
            for (let i = c * step; i < end; i++) {
              const v = Math.abs(samples[i]);
              if (v > peak) peak = v;
            }
            found[c] = peak;
            if (peak > loudest) loudest = peak;
          }
          if (loudest > 0) for (let c = 0; c < columns; c++) found[c] /= loudest;
          peaks = found;
          waveform.hidden = false;
          waveform.dataset.peaks = String(columns);
          drawWaveform();
        })
        .catch(function () { /* the seek bar still works without a picture */ });
    }

    waveform.addEventListener("click", function (event) {
      const total = isFinite(audio.duration) && audio.duration > 0 ? audio.duration : duration;
      const box = waveform.getBoundingClientRect();
      if (total > 0 && box.width > 0) {
        audio.currentTime = (event.clientX - box.left) / box.width * total;
        updateClock();
      }
    });

    function askReason() {
      reasonInput.value = reason() || sessionStorage.getItem(LAST_REASON) || "";
      reasonError.hidden = true;
      dialog.showModal();
      reasonInput.focus();
    }

    function updateClock() {
      const total = isFinite(audio.duration) && audio.duration > 0 ? audio.duration : duration;
      clock.textContent = ui.clock(audio.currentTime) + " / " + ui.clock(total);
      if (!dragging && total > 0) seek.value = String(Math.round(audio.currentTime / total * 1000));
      drawWaveform();
    }

    if (reason()) {
      attach(reason());
    }

    play.addEventListener("click", function () {
      if (!reason()) {
        askReason();
        return;
      }
      if (audio.paused) audio.play().catch(function () { ui.show(audioError, ui.t("audio.error")); });
      else audio.pause();
    });

    reasonForm.addEventListener("submit", function (event) {
      event.preventDefault();
      const text = reasonInput.value.trim();
      if (!text) {
        reasonError.hidden = false;
        reasonInput.focus();
        return;
      }
      dialog.close();
      attach(text);
      audio.play().catch(function () { ui.show(audioError, ui.t("audio.error")); });
    });
    document.getElementById("reason-cancel").addEventListener("click", function () {
      dialog.close();
      play.focus();
    });

    audio.addEventListener("play", function () { play.textContent = ui.t("pause"); });
    audio.addEventListener("pause", function () { play.textContent = ui.t("play"); });
    audio.addEventListener("timeupdate", updateClock);
    audio.addEventListener("durationchange", function () {
      if (isFinite(audio.duration) && audio.duration > 0) duration = audio.duration;
      updateClock();
    });
    audio.addEventListener("error", function () { ui.show(audioError, ui.t("audio.error")); });

    seek.addEventListener("input", function () { dragging = true; });
    seek.addEventListener("change", function () {
      dragging = false;
      const total = isFinite(audio.duration) && audio.duration > 0 ? audio.duration : duration;
      audio.currentTime = parseInt(seek.value, 10) / 1000 * total;
      updateClock();
    });
    speed.addEventListener("change", function () {
      audio.playbackRate = parseFloat(speed.value);
    });
  }

  const evaluationForm = document.getElementById("evaluation-form");
  if (evaluationForm) {
    const list = document.getElementById("evaluations");
    const none = document.getElementById("evaluations-none");
    const status = document.getElementById("evaluation-status");
    const chooser = evaluationForm.elements.form;
    const blocks = Array.from(evaluationForm.querySelectorAll(".form-block"));

    function blockOf(name) {
      return blocks.find(function (block) { return block.dataset.form === name; });
    }

    // Only the chosen form's inputs take part: the others are hidden and disabled, so that
    // their required scores do not stop the browser from submitting.
    function choose(name) {
      for (const block of blocks) {
        const chosen = block.dataset.form === name;
        block.hidden = !chosen;
        for (const input of block.querySelectorAll("input")) input.disabled = !chosen;
      }
    }

    function scoresOf(block) {
      const scores = {};
      for (const criterion of block.querySelectorAll("[data-criterion]")) {
        const checked = criterion.querySelector("input[type=radio]:checked");
        const number = criterion.querySelector("input[type=number]");
        const value = checked ? checked.value : (number ? number.value : "");
        if (value !== "") scores[criterion.dataset.criterion] = parseInt(value, 10);
      }
      return scores;
    }

    function item(evaluation) {
      const block = blockOf(evaluation.form);
      const li = ui.el("li", null, { "class": "evaluation", "data-id": evaluation.id });
      const head = ui.el("p", null, { "class": "evaluation-head" });
      head.appendChild(ui.el("strong", evaluation.evaluator));
      head.appendChild(document.createTextNode(
        " · " + (block ? block.dataset.title : evaluation.form) + " "));
      if (evaluation.form_version) {
        head.appendChild(ui.el("span", "(" + ui.t("evaluation.version", { n: evaluation.form_version }) + ")",
          { "class": "muted" }));
      }
      head.appendChild(document.createTextNode(" · " + ui.when(evaluation.updated_at)));
      li.appendChild(head);
      const scores = ui.el("p", null, { "class": "scores" });
      const criteria = block ? Array.from(block.querySelectorAll("[data-criterion]")) : [];
      for (const criterion of criteria) {
        const key = criterion.dataset.criterion;
        if (!(key in evaluation.scores)) continue;
        scores.appendChild(ui.el("span", criterion.dataset.label + ": " + evaluation.scores[key] +
          "/" + criterion.dataset.max, { "class": "score" }));
        scores.appendChild(document.createTextNode(" "));
      }
      li.appendChild(scores);
      if (evaluation.comment) li.appendChild(ui.el("p", evaluation.comment, { "class": "comment" }));
      return li;
    }

    if (chooser.tagName === "SELECT") {
      chooser.addEventListener("change", function () { choose(chooser.value); });
      choose(chooser.value);
    }

    evaluationForm.addEventListener("submit", async function (event) {
      event.preventDefault();
      const name = chooser.value;
      const block = blockOf(name);
      const comment = evaluationForm.elements.comment.value.trim();
      const button = evaluationForm.querySelector("button[type=submit]");
      button.disabled = true;
      try {
        const saved = await ui.api("POST", "/api/v1/recordings/" +
          encodeURIComponent(evaluationForm.dataset.recording) + "/evaluations", {
          form: name, scores: block ? scoresOf(block) : {}, comment: comment || null,
        });
        const old = list.querySelector('[data-id="' + CSS.escape(saved.id) + '"]');
        if (old) old.replaceWith(item(saved));
        else list.appendChild(item(saved));
        none.hidden = true;
        status.textContent = ui.t("saved");
      } catch (error) {
        status.textContent = ui.t("error") + ": " + error.message;
      } finally {
        button.disabled = false;
      }
    });
  }
})();
