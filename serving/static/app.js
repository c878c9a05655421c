// The clinician page: plain DOM, no build step. Record text is always inserted as text, never HTML.
"use strict";

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function numberOrNull(id) {
  const value = document.getElementById(id).value;
  return value === "" ? null : Number(value);
}

function describe(c) {
  const age = c.age_years === null ? "age unknown" : `${c.age_years} years`;
  const sex = c.sex || "sex unknown";
  return `${age} · ${sex} · score ${c.score === null ? "–" : c.score.toFixed(3)} · PMID ${c.pmid || "–"}`;
}

function showCases(data) {
  const list = document.getElementById("cases");
  list.replaceChildren();
  for (const c of data.cases) {
    const item = el("li", null, "case");
    item.dataset.uid = c.patient_uid;
    const title = c.article_url ? el("a", c.title || "Untitled") : el("span", c.title || "Untitled");
    if (c.article_url) { title.href = c.article_url; title.target = "_blank"; title.rel = "noopener noreferrer"; }
    item.append(title, el("div", describe(c), "case-meta"));
    const passages = el("ul", null, "passages");
    for (const p of c.passages) passages.append(el("li", p));
    item.append(passages);
    list.append(item);
  }
  document.getElementById("meta").textContent =
    `index ${data.index_version} · ${data.retriever} · ${Math.round(data.timings_ms.total)} ms`;
  document.getElementById("results").hidden = false;
}

function showAnalysis(analysis) {
  const section = document.getElementById("analysis");
  const error = document.getElementById("analysis-error");
  section.hidden = analysis.generator === "none";
  document.getElementById("analysis-text").textContent = analysis.text || "";
  error.hidden = !analysis.error;
  error.textContent = analysis.error ? `The analysis is incomplete: ${analysis.error}` : "";
}

async function submit(event) {
  event.preventDefault();
  const status = document.getElementById("status");
  const button = document.getElementById("submit");
  const sex = document.getElementById("sex").value;
  const body = {
    text: document.getElementById("text").value,
    k: numberOrNull("k") || 5,
    generate: document.getElementById("generate").checked,
    filters: { age_min: numberOrNull("age-min"), age_max: numberOrNull("age-max"), sex: sex || null },
  };
  const headers = { "Content-Type": "application/json" };
  const key = document.getElementById("api-key").value;
  if (key) headers["X-API-Key"] = key;
  button.disabled = true;
  status.textContent = "Searching…";
  try {
    const response = await fetch("/v1/query", { method: "POST", headers, body: JSON.stringify(body) });
    const data = await response.json();
    if (!response.ok) {
      const detail = Array.isArray(data.detail)
        ? data.detail.map((d) => `${d.field}: ${d.msg}`).join("; ")
        : data.detail;
      status.textContent = `Error ${response.status}: ${detail}`;
      return;
    }
    showCases(data);
    showAnalysis(data.analysis);
    status.textContent = `${data.cases.length} similar cases`;
  } catch (err) {
    status.textContent = `The service did not answer (${err.message}).`;
  } finally {
    button.disabled = false;
  }
}

document.getElementById("query-form").addEventListener("submit", submit);
