"use strict";
// Sign-in and sign-out through the JSON API; the CSRF token lives in sessionStorage.
(function () {
  const CSRF_KEY = "tallenne.csrf";

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
          let message = response.status === 401 ? "Wrong username or password."
            : await problemText(response);
          if (response.status === 429 && wait) {
            message = "Too many failed attempts. Try again in " + wait + " seconds.";
          }
          show(error, message);
          return;
        }
        const body = await response.json();
        sessionStorage.setItem(CSRF_KEY, body.csrf_token);
        window.location.assign("/");
      } catch (_) {
        show(error, "The service could not be reached. Try again.");
      } finally {
        button.disabled = false;
      }
    });
  }

  const logout = document.getElementById("logout");
  if (logout) {
    const meta = document.querySelector("meta[name=csrf-token]");
    const csrf = sessionStorage.getItem(CSRF_KEY) || (meta ? meta.content : "");
    logout.addEventListener("click", async function () {
      const response = await fetch("/api/v1/session", {
        method: "DELETE",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf },
      });
      sessionStorage.removeItem(CSRF_KEY);
      if (response.ok || response.status === 401) {
        window.location.assign("/");
      } else {
        show(document.getElementById("logout-error"), await problemText(response));
      }
    });
  }
})();
