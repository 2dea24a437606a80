// racetrackd dashboard: progressive enhancement of server-rendered pages, no framework.
// Actions call the JSON API with the browser's cookie and the page's CSRF token (X-CSRF-Token).
"use strict";

const csrfToken = () => document.querySelector('meta[name="csrf-token"]').content;

async function api(method, url, body) {
  const headers = { "X-CSRF-Token": csrfToken() };
  const init = { method, headers, credentials: "same-origin" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  const response = await fetch(url, init);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
  if (!response.ok) {
    const message = data && data.error ? data.error + (data.hint ? " (" + data.hint + ")" : "") : response.status + " " + response.statusText;
    throw new Error(message);
  }
  return data;
}

function say(text, isError) {
  const region = document.querySelector(".api-result");
  if (region) {
    region.textContent = text;
    region.classList.toggle("alert", Boolean(isError));
  } else if (isError) {
    window.alert(text);
  }
}

// A confirmation in a modal <dialog> (keyboard: Tab between the buttons, Esc cancels).
function confirmAction(message) {
  const dialog = document.getElementById("confirm-dialog");
  if (!message) return Promise.resolve(true);
  if (!dialog || typeof dialog.showModal !== "function") return Promise.resolve(window.confirm(message));
  document.getElementById("confirm-message").textContent = message;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

function afterAction(then, data) {
  if (then === "deployment" && data && data.id) {
    window.location.assign("/dashboard/deployments/" + encodeURIComponent(data.id));
  } else if (then) {
    window.location.assign(then);
  } else {
    window.location.reload();
  }
}

// <button data-api-method data-api-url [data-api-body] [data-confirm] [data-then]>
function wireButtons() {
  document.querySelectorAll("button[data-api-method]").forEach((button) => {
    button.addEventListener("click", async () => {
      if (!(await confirmAction(button.dataset.confirm))) return;
      button.disabled = true;
      try {
        const data = await api(button.dataset.apiMethod, button.dataset.apiUrl, button.dataset.apiBody);
        afterAction(button.dataset.then, data);
      } catch (error) {
        say(error.message, true);
        button.disabled = false;
      }
    });
  });
}

// <form data-api-method data-api-url [data-api-result="token"]>: fields become a JSON object
// (data-type="number"/"bool"/"json" converts; empty fields are left out).
function formBody(form) {
  const body = {};
  for (const field of form.elements) {
    if (!field.name || field.type === "submit") continue;
    if (field.dataset.type === "bool") { body[field.name] = field.checked; continue; }
    if (field.value === "") continue;
    const type = field.dataset.type;
    body[field.name] = type === "number" ? Number(field.value) : type === "json" ? JSON.parse(field.value) : field.value;
  }
  return body;
}

function wireForms() {
  document.querySelectorAll("form[data-api-method]").forEach((form) => {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const submit = form.querySelector('[type="submit"]');
      submit.disabled = true;
      try {
        const data = await api(form.dataset.apiMethod, form.dataset.apiUrl, formBody(form));
        if (form.dataset.apiResult === "token" && data && data.token) {
          showTokenOnce(form, data.token);
        } else {
          window.location.reload();
        }
      } catch (error) {
        say(error.message, true);
      } finally {
        submit.disabled = false;
      }
    });
  });
}

// <form id="plugin-upload" data-upload-url>: the ZIP goes as the raw body, as `rtd plugin install` sends it.
function wirePluginUpload() {
  const form = document.getElementById("plugin-upload");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = form.elements.plugin.files[0];
    if (!file) return;
    const submit = form.querySelector('[type="submit"]');
    submit.disabled = true;
    try {
      const url = form.dataset.uploadUrl + encodeURIComponent(file.name) + "?replace=" + (form.elements.replace.checked ? "1" : "0");
      const response = await fetch(url, {
        method: "POST", credentials: "same-origin", body: file,
        headers: { "Content-Type": "application/zip", "X-CSRF-Token": csrfToken() },
      });
      const data = await response.json().catch(() => null);
      if (!response.ok) throw new Error(data && data.error ? data.error : response.status + " " + response.statusText);
      window.location.reload();
    } catch (error) {
      say(error.message, true);
    } finally {
      submit.disabled = false;
    }
  });
}

// The one time a token is visible: in the page that made it, never stored or shown again.
function showTokenOnce(form, token) {
  const output = form.querySelector("output");
  output.textContent = "";
  const intro = document.createElement("span");
  intro.textContent = "New token (copy it now; it is not shown again): ";
  const code = document.createElement("code");
  code.textContent = token;
  output.append(intro, code);
  if (form.dataset.loginRemote) {
    const command = document.createElement("pre");
    command.className = "command";
    command.textContent = "rtd login " + token + " --remote " + form.dataset.loginRemote;
    output.append(command);
  }
  const copy = document.createElement("button");
  copy.type = "button";
  copy.textContent = "Copy";
  copy.addEventListener("click", () => navigator.clipboard && navigator.clipboard.writeText(token));
  output.append(copy);
}

function wireCopy() {
  document.querySelectorAll("button[data-copy]").forEach((button) => {
    button.addEventListener("click", () => {
      const text = document.querySelector(button.dataset.copy).textContent;
      if (navigator.clipboard) navigator.clipboard.writeText(text).then(() => { button.textContent = "Copied"; });
    });
  });
}

// Jobs page: the families region is re-read every few seconds (deploys and crashes show up).
function wireLiveRegion() {
  const region = document.querySelector("[data-live-url]");
  if (!region) return;
  const interval = Number(region.dataset.liveInterval || 3000);
  let busy = false;
  setInterval(async () => {
    if (busy || document.hidden || region.contains(document.activeElement)) return;
    busy = true;
    try {
      const response = await fetch(region.dataset.liveUrl, { credentials: "same-origin" });
      if (response.redirected) { window.location.reload(); return; }
      if (response.ok) {
        const html = await response.text();
        if (html !== region.dataset.lastHtml) {
          region.innerHTML = html;
          region.dataset.lastHtml = html;
        }
      }
    } finally {
      busy = false;
    }
  }, interval);
}

// Job page: the Call form, pre-filled with the job's docs_input_example (from its OpenAPI document).
async function wireCallForm() {
  const form = document.querySelector("form.call-form");
  if (!form) return;
  const pubPath = form.dataset.pubPath;
  const bodyField = form.querySelector("textarea");
  const endpointField = form.querySelector('input[name="endpoint"]');
  const methodField = form.querySelector('select[name="method"]');
  const result = document.getElementById("call-result");
  let examples = {};
  // Only a wrapper job serves its OpenAPI document there; another job's server may not know the path.
  if (form.dataset.wrapper === "true") {
    try {
      const response = await fetch(pubPath + "/openapi.json", { credentials: "same-origin" });
      if (response.ok) {
        const spec = await response.json();
        const list = document.getElementById("call-endpoints");
        for (const [path, methods] of Object.entries(spec.paths || {})) {
          if (!methods.post) continue;
          const content = ((methods.post.requestBody || {}).content || {})["application/json"] || {};
          if (content.example !== undefined) examples[path] = content.example;
          const option = document.createElement("option");
          option.value = path;
          list.append(option);
        }
      }
    } catch (_) { examples = {}; }
  }
  const fill = () => {
    const example = examples[endpointField.value];
    if (example !== undefined) bodyField.value = JSON.stringify(example, null, 2);
  };
  fill();
  endpointField.addEventListener("change", fill);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    result.textContent = "Calling…";
    try {
      const method = methodField.value;
      const bodyless = method === "GET" || method === "HEAD";
      const response = await fetch(pubPath + endpointField.value, {
        method, credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
        body: bodyless ? undefined : bodyField.value,
      });
      const text = await response.text();
      let shown = text;
      try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { /* not JSON: show as is */ }
      result.textContent = response.status + " " + response.statusText + "\n" + shown;
    } catch (error) {
      result.textContent = "The call failed: " + error.message;
    }
  });
}

// Streams a plain-text URL into a <pre> until stopped (job logs with ?follow=true).
function wireLogFollow() {
  document.querySelectorAll("button.logs-follow").forEach((button) => {
    let controller = null;
    const target = document.querySelector(button.dataset.target);
    button.addEventListener("click", async () => {
      if (controller) { controller.abort(); return; }
      controller = new AbortController();
      button.textContent = "Stop following";
      target.textContent = "";
      try {
        const response = await fetch(button.dataset.url, { credentials: "same-origin", signal: controller.signal });
        if (!response.ok) throw new Error((await response.json()).error || response.statusText);
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          const atBottom = target.scrollTop + target.clientHeight >= target.scrollHeight - 4;
          target.textContent += decoder.decode(value, { stream: true });
          if (atBottom) target.scrollTop = target.scrollHeight;
        }
      } catch (error) {
        if (error.name !== "AbortError") target.textContent += "\n[" + error.message + "]";
      } finally {
        controller = null;
        button.textContent = "Follow logs";
      }
    });
  });
}

// Deployment page: phase, status and build log follow the deployment until it ends.
function wireDeployment() {
  const box = document.getElementById("deployment");
  if (!box || box.dataset.status !== "in_progress") return;
  const id = box.dataset.deploymentId;
  const log = document.getElementById("build-log");
  let offset = Number(box.dataset.logOffset || 0);
  const poll = async () => {
    try {
      const logs = await api("GET", "/lifecycle/api/v1/deploy/" + encodeURIComponent(id) + "/build-logs?offset=" + offset);
      if (logs.logs) {
        log.textContent += logs.logs;
        log.scrollTop = log.scrollHeight;
      }
      offset = logs.offset;
      const deployment = await api("GET", "/lifecycle/api/v1/deploy/" + encodeURIComponent(id));
      document.getElementById("deployment-phase").textContent = deployment.phase || "";
      const rows = deployment.phases.map(() => "<tr><td></td><td></td></tr>").join("");
      const body = document.querySelector("#deployment-phases tbody");
      body.innerHTML = rows;
      deployment.phases.forEach((p, i) => {
        body.rows[i].cells[0].textContent = p.name;
        body.rows[i].cells[1].textContent = p.duration === null ? "running" : p.duration.toFixed(1) + " s";
      });
      if (deployment.status !== "in_progress") {
        window.location.reload();  // the finished page: durations, error, links
        return;
      }
    } catch (error) {
      say(error.message, true);
    }
    setTimeout(poll, 1000);
  };
  setTimeout(poll, 500);
}

document.addEventListener("DOMContentLoaded", () => {
  wireButtons();
  wireForms();
  wirePluginUpload();
  wireCopy();
  wireLiveRegion();
  wireCallForm();
  wireLogFollow();
  wireDeployment();
});
