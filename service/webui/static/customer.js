"use strict";
// Customer lookup and the customer page: details, prohibitions (add, withdraw), the
// customer's calls and web-site events, all through the JSON API.
(function () {
  const ui = window.tallenne;

  const lookup = document.getElementById("lookup-form");
  if (lookup) {
    const results = document.getElementById("lookup-results");
    const status = document.getElementById("lookup-status");
    lookup.addEventListener("submit", async function (event) {
      event.preventDefault();
      const personalId = lookup.elements.personal_id.value.trim();
      const body = personalId ? { personal_id: personalId } : {
        company: lookup.elements.company.value,
        customer_number: lookup.elements.customer_number.value.trim(),
      };
      status.textContent = ui.t("loading");
      try {
        const found = await ui.api("POST", "/api/v1/customers/lookup", body);
        results.replaceChildren(...found.items.map(function (customer) {
          const li = document.createElement("li");
          li.appendChild(ui.el("a", customer.name || customer.id, { href: "/customers/" + customer.id }));
          li.appendChild(document.createTextNode(" · " + customer.companies.map(function (m) {
            return m.company + " " + m.customer_number;
          }).join(", ")));
          return li;
        }));
        status.textContent = found.items.length ? "" : ui.t("search.none");
      } catch (error) {
        status.textContent = ui.t("error") + ": " + error.message;
      }
    });
  }

  const root = document.getElementById("customer");
  if (!root) return;
  const customerId = root.dataset.customer;
  const base = "/api/v1/customers/" + encodeURIComponent(customerId);
  const mayWrite = root.dataset.mayWrite === "yes";
  const pStatus = document.getElementById("p-status");

  function text(id, value) {
    document.getElementById(id).textContent = value || "–";
  }

  function showCustomer(customer) {
    text("c-name", customer.name);
    text("c-pid", customer.personal_id);
    const a = customer.address || {};
    text("c-address", [a.street, [a.postal_code, a.city].filter(Boolean).join(" "), a.country]
      .filter(Boolean).join(", "));
    text("c-email", customer.email);
    text("c-phone", customer.phone);
    text("c-companies", customer.companies.map(function (m) {
      return m.company + " (" + m.customer_number + ")";
    }).join(", "));
    const body = document.querySelector("#prohibitions tbody");
    const active = customer.prohibitions.filter(function (p) { return !p.withdrawn_at; });
    body.replaceChildren(...active.map(function (p) {
      const tr = document.createElement("tr");
      ui.cell(tr, ui.t("use." + p.use));
      ui.cell(tr, ui.t("channel." + p.channel));
      ui.cell(tr, ui.when(p.received_at));
      ui.cell(tr, p.recorded_by);
      if (mayWrite) {
        const button = ui.el("button", ui.t("prohibition.withdraw"), {
          type: "button", "class": "plain",
          "aria-label": ui.t("prohibition.withdraw") + ": " + ui.t("use." + p.use),
        });
        button.addEventListener("click", function () { withdraw(p.use); });
        ui.cell(tr, button);
      } else {
        ui.cell(tr, "");
      }
      return tr;
    }));
    document.getElementById("p-none").hidden = active.length > 0;
  }

  async function withdraw(use) {
    try {
      showCustomer(await ui.api("DELETE", base + "/prohibitions/" + encodeURIComponent(use)));
      pStatus.textContent = ui.t("saved");
    } catch (error) {
      pStatus.textContent = ui.t("error") + ": " + error.message;
    }
  }

  const form = document.getElementById("prohibition-form");
  if (form) {
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      const body = { use: form.elements.use.value, channel: form.elements.channel.value };
      const received = ui.rfc3339(form.elements.received_at.value);
      if (received) body.received_at = received;
      try {
        showCustomer(await ui.api("POST", base + "/prohibitions", body));
        pStatus.textContent = ui.t("saved");
      } catch (error) {
        pStatus.textContent = ui.t("error") + ": " + error.message;
      }
    });
  }

  const requestForm = document.getElementById("access-request-form");
  if (requestForm) {
    const arStatus = document.getElementById("ar-status");
    requestForm.addEventListener("submit", async function (event) {
      event.preventDefault();
      const body = { verified_by: requestForm.elements.verified_by.value };
      const received = ui.rfc3339(requestForm.elements.received_at.value);
      if (received) body.received_at = received;
      try {
        const taken = await ui.api("POST", base + "/access-requests", body);
        arStatus.textContent = ui.t("access_request.taken", { due: ui.when(taken.due_at), id: taken.id });
      } catch (error) {
        arStatus.textContent = ui.t("error") + ": " + error.message;
      }
    });
  }

  async function loadCalls() {
    const table = document.querySelector("#customer-calls tbody");
    if (!table) return;
    const page = await ui.api("GET", "/api/v1/recordings?limit=100&customer_id=" + encodeURIComponent(customerId));
    table.replaceChildren(...page.items.map(function (r) {
      const tr = document.createElement("tr");
      ui.cell(tr, ui.el("a", ui.when(r.started_at), { href: "/recordings/" + r.id }));
      ui.cell(tr, r.company);
      ui.cell(tr, r.agent);
      ui.cell(tr, ui.t("direction." + r.direction));
      ui.cell(tr, ui.clock(r.duration_s));
      ui.cell(tr, r.external_id).className = "mono";
      return tr;
    }));
    document.getElementById("calls-none").hidden = page.items.length > 0;
  }

  async function loadEvents() {
    const table = document.querySelector("#customer-events tbody");
    if (!table) return;
    const page = await ui.api("GET", "/api/v1/web-events?limit=100&customer_id=" + encodeURIComponent(customerId));
    table.replaceChildren(...page.items.map(function (e) {
      const tr = document.createElement("tr");
      ui.cell(tr, ui.when(e.ts));
      ui.cell(tr, e.site);
      ui.cell(tr, e.event);
      ui.cell(tr, e.url).className = "url";
      return tr;
    }));
    document.getElementById("events-none").hidden = page.items.length > 0;
  }

  ui.api("GET", base).then(function (customer) {
    showCustomer(customer);
    return Promise.all([loadCalls(), loadEvents()]);
  }).catch(function (error) {
    ui.pageError(error.message);
  });
})();
