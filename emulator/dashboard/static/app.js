// appgw-emulator dashboard. Plain DOM, no framework. Everything shown comes from the JSON API and
// is inserted as text (textContent), never as markup: certificate subjects and URIs are chosen by
// whoever sent the request.
"use strict";

const POLL_MS = 1000;
// A forwarded PEM is ~900 characters: long values are cut, DNs and dates are not.
const HEADER_VALUE_CHARS = 80;
const HEADER_VALUE_SHOWN = 40;
const state = { config: null, paused: false, lastKey: "" };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else if (name === "className") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function dl(pairs) {
  const list = el("dl");
  for (const [term, value] of pairs) {
    if (value === null || value === undefined || value === "") continue;
    list.append(el("dt", { text: term }), el("dd", {}, value));
  }
  return list;
}

function shorten(value, limit) {
  const text = String(value);
  return text.length > limit ? `${text.slice(0, limit)}… (${text.length} characters)` : text;
}

function headerList(headers) {
  if (!headers || headers.length === 0) return "no certificate headers";
  return el("ul", { className: "headers" },
    headers.map(([name, value]) => el("li", {},
      el("code", { text: name }), ": ",
      value === "" ? "(empty)" : value.length > HEADER_VALUE_CHARS ? shorten(value, HEADER_VALUE_SHOWN) : value)));
}

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  };
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

// -- the gateway as configured -------------------------------------------------------------------

function table(caption, columns, rows) {
  return el("table", {},
    el("caption", { text: caption }),
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", { scope: "col", text: c })))),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) => el("td", {}, c))))));
}

function yesNo(value) { return value ? "yes" : "no"; }

function renderConfig(config) {
  const gw = config.gateway;
  document.getElementById("gateway-name").textContent = `— ${gw.gateway}`;
  document.getElementById("gateway-summary").textContent =
    `API ${gw.apiVersion}, SKU ${gw.sku || "?"}; ${gw.listeners.length} listener(s), ` +
    `${gw.rules.length} rule(s). Strict verifies the client certificate; Passthrough asks ` +
    "for one, verifies nothing and forwards it.";
  const body = document.getElementById("config-body");
  body.replaceChildren(
    table("Listeners", ["Listener", "Port (template → local)", "Protocol", "Host names", "SSL profile",
      "Client authentication", "Issuer DN check", "Revocation check", "Trusted client CAs"],
    gw.listeners.map((l) => [
      el("strong", { text: l.name }),
      `${l.port} → ${l.localPort ?? "not bound"}`,
      l.protocol,
      l.hostNames.length ? l.hostNames.join(", ") : "any",
      l.sslProfile ? l.sslProfile.name : "none",
      l.mode,
      l.sslProfile ? yesNo(l.verifyClientCertIssuerDN) : "—",
      l.sslProfile ? l.verifyClientRevocation : "—",
      l.sslProfile && l.sslProfile.trustedClientCaSubjects.length
        ? el("ul", { className: "headers" }, l.sslProfile.trustedClientCaSubjects.map((s) => el("li", { text: s })))
        : "none",
    ])),
    table("Routing rules", ["Rule", "Priority", "Listener", "Backend pool", "Backend settings",
      "Rewrite rule set", "Client certificate forwarded in"],
    gw.rules.map((r) => [r.name, String(r.priority ?? "—"), r.listener, r.pool, r.backendSettings,
      r.rewriteRuleSet || "none",
      r.forwardsClientCertificateIn.length ? r.forwardsClientCertificateIn.join(", ") : "not forwarded"])),
    table("Backend pools", ["Pool", "Addresses"],
      gw.pools.map((p) => [p.name, p.addresses.join(", ") || "no addresses"])),
    table("Rewrite rule sets", ["Rule set", "Rules (ruleSequence)"],
      gw.rewriteRuleSets.map((s) => [s.name, s.rules.map((r) => `${r.name} (${r.ruleSequence})`).join(", ")])),
  );
  const notes = [
    ...gw.warnings.map((w) => `Warning: ${w}`),
    ...gw.forgeableCertificateHeaders.map((h) => `WARNING (listener ${h.listener}): ${h.message}. Fix: ${h.fix}`),
  ];
  if (gw.notEmulated.length) notes.push(`Accepted but not emulated locally: ${gw.notEmulated.join(", ")}`);
  if (notes.length) body.append(el("h3", { text: "Warnings and notes" }), el("ul", {}, notes.map((n) => el("li", { text: n }))));
}

// -- try it --------------------------------------------------------------------------------------

function validityText(cert) {
  if (!cert) return "—";
  return `${cert.validity} (${cert.notBefore.slice(0, 10)} to ${cert.notAfter.slice(0, 10)})`;
}

function renderIdentities(config) {
  const panel = config.try;
  const notice = document.getElementById("try-unavailable");
  if (panel.unavailable) {
    notice.textContent = panel.unavailable;
    notice.hidden = false;
  }
  for (const mode of ["Strict", "Passthrough"]) {
    const target = panel.targets[mode];
    document.getElementById(`try-col-${mode.toLowerCase()}`).textContent =
      target ? `${mode} (${target})` : `${mode} (no such listener)`;
  }
  const rows = panel.identities.map((identity) => {
    const cert = identity.certificate;
    const button = el("button", { type: "button", "data-identity": identity.key,
      text: `Try ${identity.label}` });
    button.addEventListener("click", () => tryIdentity(identity, button));
    return el("tr", {},
      el("th", { scope: "row" }, identity.label, el("br"),
        el("span", { className: "muted note", text: identity.description })),
      el("td", {}, cert ? [cert.subject, " ", el("code", { className: "muted", text: identity.file }), el("br"),
        el("span", { className: "muted", text: `issued by ${cert.issuer}` })] : "no certificate is sent"),
      el("td", { text: validityText(cert) }),
      el("td", {}, button));
  });
  document.querySelector("#identities tbody").replaceChildren(...rows);
}

function resultCell(result) {
  if (result.error) {
    return el("td", { className: "result failed", "data-mode": result.mode },
      el("p", { className: "outcome" }, el("strong", { text: "✘ no answer" })),
      dl([["Listener", result.listener || "—"], ["Error", result.error]]));
  }
  const ok = result.status >= 200 && result.status < 400;
  const outcome = el("p", { className: "outcome" },
    el("strong", { text: `${ok ? "✔" : "✘"} ${result.status} ${result.reason}` }),
    result.page ? ` — ${result.page.replace(/^\d{3}\s+/, "")}` : (result.backendReached ? " — forwarded to the backend" : ""));
  const forwarded = result.forwardedCertificate;
  let backend = "not contacted: the gateway answered itself";
  if (result.backendReached) backend = `reached (backend status ${result.backendStatus || "?"})`;
  return el("td", { className: `result ${ok ? "accepted" : "refused"}`, "data-mode": result.mode, "data-status": result.status },
    outcome,
    dl([
      ["Listener", `${result.listener} (port ${result.port})`],
      ["Protocol", result.httpVersion],
      ["Verification", result.verification],
      ["Backend", backend],
      ["Backend received", result.certHeaders ? headerList(result.certHeaders) : null],
      ["Forwarded cert", forwarded ? `${forwarded.subject}, valid ${forwarded.not_before} to ${forwarded.not_after}` : null],
      ["Why", result.explanation],
      ["Trace id", result.traceId ? el("code", { text: result.traceId }) : null],
    ]));
}

async function tryIdentity(identity, button) {
  const status = document.getElementById("try-status");
  const buttons = document.querySelectorAll("#identities button");
  buttons.forEach((b) => { b.disabled = true; });
  status.textContent = `Sending the ${identity.label} identity to both listeners…`;
  try {
    const http2 = document.getElementById("try-http2").checked;
    const answer = await api("/api/try", { identity: identity.key, http2 });
    const row = el("tr", { "data-identity": identity.key },
      el("th", { scope: "row", text: identity.label }),
      answer.results.map(resultCell));
    document.querySelector("#try-results tbody").prepend(row);
    status.textContent = `Done: ${answer.results.map((r) => `${r.mode} ${r.status ?? "no answer"}`).join(", ")}.`;
    refreshRequests();
  } catch (error) {
    status.textContent = `Could not try: ${error.message}`;
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
    button.focus();
  }
}

// -- live requests -------------------------------------------------------------------------------

function certificateCell(cert) {
  if (!cert) return "none";
  let validity = "validity not recorded";
  if (cert.validity) validity = `${cert.validity} (${cert.notBefore.slice(0, 10)} to ${cert.notAfter.slice(0, 10)})`;
  return [cert.subject || "(no subject)", el("br"), el("span", { className: "muted", text: `issued by ${cert.issuer}` }),
    el("br"), el("span", { className: "muted", text: validity })];
}

function backendCell(backend) {
  if (!backend.reached) return "not contacted";
  const parts = [`reached ${backend.address} (${backend.status || "?"})`];
  if (backend.observed) {
    const count = backend.certHeaders.length;
    parts.push(count === 0 ? [el("br"), "no certificate headers received"]
      : el("details", {}, el("summary", { text: `${count} certificate header(s) received` }),
        headerList(backend.certHeaders)));
  }
  else if (state.config && !state.config.backendObserved) parts.push(el("br"), el("span", { className: "muted", text: "headers not observed (your own backend)" }));
  return parts;
}

function renderRequests(data) {
  const rows = data.requests.map((r) => {
    const time = r.time ? r.time.slice(11, 23) : "";
    return el("tr", {},
      el("td", {}, el("time", { datetime: r.time, text: time })),
      el("td", { text: r.listener }),
      el("td", { text: r.mode }),
      el("td", { className: "cert" }, certificateCell(r.clientCertificate)),
      el("td", { className: "mono", text: r.verification }),
      el("td", { text: String(r.status) }),
      el("td", { className: "backend" }, backendCell(r.backend)),
      el("td", { className: "explain", text: r.explanation || "—" }),
      el("td", { className: "trace" }, el("code", { text: r.traceId })));
  });
  document.querySelector("#request-table tbody").replaceChildren(...rows);
  document.getElementById("requests-status").textContent =
    `${data.requests.length} shown, ${data.kept} kept in memory` + (state.paused ? " (paused)" : "");
}

async function refreshRequests() {
  if (state.paused || document.hidden) return;
  try {
    const data = await api("/api/requests?limit=100");
    const key = `${data.kept}:${data.requests.length ? data.requests[0].traceId : ""}`;
    if (key !== state.lastKey) {
      state.lastKey = key;
      renderRequests(data);
    }
  } catch (error) {
    document.getElementById("requests-status").textContent = `Not updating: ${error.message}`;
  }
}

// -- certificate inspector -----------------------------------------------------------------------

function toBase64(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

async function inputBase64(textId, fileId) {
  const file = document.getElementById(fileId).files[0];
  if (file) return { data: toBase64(new Uint8Array(await file.arrayBuffer())), name: file.name };
  const text = document.getElementById(textId).value;
  if (text.trim()) return { data: toBase64(new TextEncoder().encode(text)), name: "pasted text" };
  return null;
}

function renderReport(report, heading) {
  const verdict = report.valid ? "✔ VALID trusted client CA upload" : `✘ NOT VALID: ${report.message} [${report.code}]`;
  const parts = [el("h3", { text: heading }), el("p", { className: "verdict", text: verdict }),
    el("p", { text: report.advice })];
  if (report.clientCertIssuerDN) parts.push(el("p", {}, "clientCertIssuerDN: ", el("code", { text: report.clientCertIssuerDN })));
  if (report.certificates.length) {
    parts.push(table(`Certificates in ${report.file} (${report.size} bytes, ${report.kind})`,
      ["#", "Subject", "Issuer", "Role", "Validity", "Self-signed"],
      report.certificates.map((c, i) => [String(i + 1), c.subject, c.issuer, c.role,
        `${c.validity} (${c.notBefore} to ${c.notAfter})`, yesNo(c.selfSigned)])));
  }
  if (report.notes.length) parts.push(el("ul", {}, report.notes.map((n) => el("li", { text: `Note: ${n}` }))));
  if (report.client) {
    const c = report.client;
    parts.push(el("h3", { text: "The client certificate" }),
      el("p", { className: "verdict", text: c.passesStrict ? `✔ ${c.subject} would pass Strict` : `✘ ${c.subject} would get 400 from Strict` }),
      dl([["sslClientVerify", c.sslClientVerify], ["Why", c.explanation]]));
  }
  return parts;
}

async function inspect(event) {
  event.preventDefault();
  const out = document.getElementById("inspector-result");
  const password = document.getElementById("ca-password");
  try {
    const file = await inputBase64("ca-text", "ca-file");
    if (!file) { out.replaceChildren(el("p", { text: "Paste a PEM or choose a file first." })); return; }
    const client = await inputBase64("client-text", "client-file");
    const body = { file: file.data, name: file.name };
    if (password.value) body.password = password.value;
    if (client) body.clientCert = client.data;
    out.replaceChildren(el("p", { text: "Checking…" }));
    const answer = await api("/api/check-ca", body);
    const parts = renderReport(answer.report, "Verdict");
    if (answer.pfx) {
      parts.push(el("h3", { text: "Inside the PFX" }), el("p", { text: answer.pfx.message }));
      if (answer.pfx.caCertificates) parts.push(...renderReport(answer.pfx.caCertificates, "Its CA certificates, as an upload"));
    } else if (answer.report.contents) {
      parts.push(...renderReport(answer.report.contents, "The CA certificates inside, as an upload"));
    }
    out.replaceChildren(...parts);
  } catch (error) {
    out.replaceChildren(el("p", { text: `Could not check: ${error.message}` }));
  } finally {
    password.value = "";
  }
}

// -- start ---------------------------------------------------------------------------------------

async function start() {
  document.getElementById("inspector-form").addEventListener("submit", inspect);
  const pause = document.getElementById("pause");
  pause.addEventListener("click", () => {
    state.paused = !state.paused;
    pause.setAttribute("aria-pressed", String(state.paused));
    pause.textContent = state.paused ? "Resume updates" : "Pause updates";
    if (!state.paused) { state.lastKey = ""; refreshRequests(); }
  });
  try {
    state.config = await api("/api/config");
    renderConfig(state.config);
    renderIdentities(state.config);
  } catch (error) {
    document.getElementById("gateway-summary").textContent = `Cannot load the configuration: ${error.message}`;
  }
  refreshRequests();
  setInterval(refreshRequests, POLL_MS);
  document.body.dataset.ready = "true";
}

document.addEventListener("DOMContentLoaded", start);
