"use strict";
// Shared helpers of the pages, plus sign-in and sign-out through the JSON API.
// Text from the server is only ever put in the page with textContent, never as HTML.
(function () {
  const CSRF_KEY = "tallenne.csrf";
  const stringsNode = document.getElementById("ui-strings");
  const strings = stringsNode ? JSON.parse(stringsNode.textContent) : {};

  function t(key, values) {
    let text = strings[key] || key;
    for (const name in values || {}) {
      text = text.replace("{" + name + "}", String(values[name]));
    }
    return text;
  }

  // A translation when the catalogue has one, else the name itself (names from data).
  function label(prefix, name) {
    const key = prefix + "." + name;
    return Object.prototype.hasOwnProperty.call(strings, key) ? strings[key] : name;
  }

  function csrf() {
    const meta = document.querySelector("meta[name=csrf-token]");
    return (meta && meta.content) || sessionStorage.getItem(CSRF_KEY) || "";
  }

  function show(element, message) {
    element.textContent = message;
    element.hidden = false;
  }

  async function problemText(response) {
    try {
      const body = await response.json();
      return body.detail || body.title || response.statusText;
    } catch (_) {
      return response.statusText;
    }
  }

  // A JSON API call with the session cookie (and the CSRF token on changes); returns the
  // parsed body, or throws an Error carrying the problem's text and status.
  async function api(method, url, body) {
    const headers = { "Accept": "application/json" };
    if (method !== "GET") headers["X-CSRF-Token"] = csrf();
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(url, {
      method: method, credentials: "same-origin", headers: headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401) {
      window.location.assign("/");
      throw new Error(t("signin"));
    }
    if (!response.ok) {
      const error = new Error(await problemText(response));
      error.status = response.status;
      throw error;
    }
    return response.status === 204 ? null : response.json();
  }

  function el(tag, text, attributes) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const name in attributes || {}) node.setAttribute(name, attributes[name]);
    return node;
  }

  function cell(row, content) {
    const td = document.createElement("td");
    if (content instanceof Node) td.appendChild(content);
    else td.textContent = content === null || content === undefined || content === "" ? "–" : String(content);
    row.appendChild(td);
    return td;
  }

  const locale = document.documentElement.lang === "en" ? "en-GB" : "fi-FI";
  // As the server renders times: in the group's own time zone, whatever the browser's is.
  const zone = "Europe/Helsinki";

  function when(iso) {
    if (!iso) return "–";
    return new Date(iso).toLocaleString(locale, {
      year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
      timeZone: zone,
    });
  }

  function clock(seconds) {
    if (!isFinite(seconds) || seconds < 0) seconds = 0;
    const whole = Math.floor(seconds);
    const m = Math.floor(whole / 60);
    const s = whole % 60;
    return m + ":" + (s < 10 ? "0" : "") + s;
  }

  // datetime-local value (the browser's time zone) → RFC 3339 with offset, or "".
  function rfc3339(localValue) {
    if (!localValue) return "";
    const date = new Date(localValue);
    return isNaN(date.getTime()) ? "" : date.toISOString();
  }

  function pageError(message) {
    const node = document.getElementById("page-error");
    if (node) show(node, message);
  }

  window.tallenne = {
    t: t, label: label, api: api, el: el, cell: cell, when: when, clock: clock, rfc3339: rfc3339,
    show: show, pageError: pageError,
  };

  const form = document.getElementById("login-form");
  if (form) {
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      const error = document.getElementById("login-error");
      error.hidden = true;
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      try {
        const response = await fetch("/api/v1/session", {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", "Accept": "application/json" },
          body: JSON.stringify({
            username: form.elements.username.value,
            password: form.elements.password.value,
          }),
        });
        if (!response.ok) {
          const wait = response.headers.get("Retry-After");
          let message = response.status === 401 ? t("signin.wrong")
            : await problemText(response);
          if (response.status === 429 && wait) {
            message = t("signin.throttled", { n: wait });
          }
          show(error, message);
          return;
        }
        const body = await response.json();
        sessionStorage.setItem(CSRF_KEY, body.csrf_token);
        window.location.reload();
      } catch (_) {
        show(error, t("unreachable"));
      } finally {
        button.disabled = false;
      }
    });
  }

  const logout = document.getElementById("logout");
  if (logout) {
    logout.addEventListener("click", async function () {
      const response = await fetch("/api/v1/session", {
        method: "DELETE",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf() },
      });
      sessionStorage.clear();
      if (response.ok || response.status === 401) {
        window.location.assign("/");
      } else {
        const target = document.getElementById("logout-error") || document.getElementById("page-error");
        show(target, await problemText(response));
      }
    });
  }
})();
