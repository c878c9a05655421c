// The clinician page: plain DOM, no build step. Record text is always inserted as text, never HTML.
"use strict";

const SEX = { F: "female", M: "male" };
// Words too common to mark in a passage.
const STOP = new Set(("a an and are as at be but by for from had has have he her his in into is it its of on or " +
  "she that the their there these they this those to was were which who with without patient year years old " +
  "presented history").split(" "));

let current = null; // the last answer: its cases, for the case view and the follow-up
const details = new Map(); // uid -> the case with its whole text

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

function headers() {
  const out = { "Content-Type": "application/json" };
  const key = document.getElementById("api-key").value;
  if (key) out["X-API-Key"] = key;
  return out;
}

function problem(status, data) {
  const detail = Array.isArray(data.detail) ? data.detail.map((d) => `${d.field}: ${d.msg}`).join("; ") : data.detail;
  return `Error ${status}: ${detail}`;
}

// A crude stem, enough to mark "coughing" for "cough" and "vomiting" for "vomit".
function stem(word) {
  return word.toLowerCase().replace(/(ing|ed|es|s|al|ic|ly)$/, "");
}

function queryStems(text) {
  const stems = new Set();
  for (const word of text.toLowerCase().match(/[a-z0-9][a-z0-9-]*/g) || []) {
    if (word.length >= 3 && !STOP.has(word) && !/^\d+$/.test(word)) stems.add(stem(word));
  }
  return stems;
}

// `text` as nodes, the words whose stem is one of `stems` in <mark>.
function marked(text, stems) {
  const out = document.createDocumentFragment();
  let last = 0;
  for (const match of text.matchAll(/[A-Za-z0-9][A-Za-z0-9-]*/g)) {
    const word = match[0];
    if (word.length < 3 || !stems.has(stem(word))) continue;
    out.append(document.createTextNode(text.slice(last, match.index)), el("mark", word));
    last = match.index + word.length;
  }
  out.append(document.createTextNode(text.slice(last)));
  return out;
}

// `text` as nodes, the spans that are one of `sentences` in <mark class="match">.
function withSentences(text, sentences) {
  const spans = [];
  for (const sentence of sentences) {
    const at = text.indexOf(sentence);
    if (at >= 0) spans.push([at, at + sentence.length]);
  }
  spans.sort((a, b) => a[0] - b[0]);
  const out = document.createDocumentFragment();
  let last = 0;
  for (const [start, end] of spans) {
    if (start < last) continue;
    out.append(document.createTextNode(text.slice(last, start)), el("mark", text.slice(start, end), "match"));
    last = end;
  }
  out.append(document.createTextNode(text.slice(last)));
  return out;
}

// A line of generated or counted text, each [n] (also [2, 3] and [1-2]) a link to case n.
function cited(line, count) {
  const out = document.createDocumentFragment();
  let last = 0;
  for (const match of line.matchAll(/\[(\d+(?:\s*[,;-]\s*\d+)*)\]/g)) {
    out.append(document.createTextNode(line.slice(last, match.index)), "[");
    const parts = match[1].split(/(\s*[,;-]\s*)/);
    for (const part of parts) {
      const n = Number(part);
      if (/^\d+$/.test(part) && n >= 1 && n <= count) {
        const link = el("a", part, "cite");
        link.href = `#case-${n}`;
        link.dataset.ref = String(n);
        link.setAttribute("aria-label", `case ${n}`);
        link.addEventListener("click", (event) => { event.preventDefault(); jumpTo(n); });
        out.append(link);
      } else {
        out.append(document.createTextNode(part));
      }
    }
    out.append("]");
    last = match.index + match[0].length;
  }
  out.append(document.createTextNode(line.slice(last)));
  return out;
}

function showText(container, text, count) {
  container.replaceChildren();
  for (const line of (text || "").split("\n")) {
    if (line.trim()) container.append(wrap(cited(line, count)));
  }
}

function wrap(fragment) {
  const p = el("p");
  p.append(fragment);
  return p;
}

function jumpTo(n) {
  const item = document.getElementById(`case-${n}`);
  if (!item) return;
  item.scrollIntoView({ block: "start" });
  item.focus({ preventScroll: true });
}

// A raw score means nothing to a reader (its scale is the retriever's), so the page shows it against this
// search's best match, in words and as a share, with the raw number and what it does not say on hover.
function relevance(c, best, retriever) {
  if (c.score === null || !(best > 0)) return el("span", "match –", "relevance");
  const share = Math.max(0, Math.min(1, c.score / best));
  const band = share >= 0.85 ? "close" : share >= 0.6 ? "partial" : "distant";
  const node = el("span", `${band} match (${Math.round(share * 100)}% of the best)`, `relevance ${band}`);
  node.title = `Raw ${retriever} score ${c.score.toFixed(3)}; the best case of this search scores ${best.toFixed(3)}. ` +
    "The share compares cases of this search only: it is not a probability that a case is relevant. " +
    (retriever.startsWith("hybrid") ? "0% is the average of the cases this search weighed (the hybrid score's zero)." :
      "0% is a score of zero.");
  return node;
}

function describe(c, best, retriever) {
  const age = c.age_display || "age unknown";
  const sex = SEX[c.sex] || "sex unknown";
  const meta = el("div", `${age} · ${sex} · `, "case-meta");
  meta.append(relevance(c, best, retriever), ` · PMID ${c.pmid || "–"}`);
  return meta;
}

function showCases(data, query) {
  const list = document.getElementById("cases");
  const stems = queryStems(query);
  list.replaceChildren();
  const best = Math.max(...data.cases.map((c) => (c.score === null ? 0 : c.score)), 0);
  data.cases.forEach((c, i) => {
    const ref = i + 1;
    const item = el("li", null, "case");
    item.id = `case-${ref}`;
    item.tabIndex = -1;
    item.dataset.uid = c.patient_uid;
    const head = el("div", null, "case-head");
    const title = c.article_url ? el("a", c.title || "Untitled") : el("span", c.title || "Untitled");
    if (c.article_url) { title.href = c.article_url; title.target = "_blank"; title.rel = "noopener noreferrer"; }
    head.append(title);
    if (c.synthetic) head.append(el("span", "synthetic", "tag"));
    item.append(head, describe(c, best, data.retriever));
    const passages = el("ul", null, "passages");
    for (const p of c.passages) {
      const li = el("li");
      li.append(marked(p, stems));
      passages.append(li);
    }
    const view = el("div", null, "case-view");
    view.id = `case-view-${ref}`;
    view.hidden = true;
    const open = el("button", "Read the whole case", "secondary open-case");
    open.type = "button";
    open.dataset.ref = String(ref);
    open.setAttribute("aria-expanded", "false");
    open.setAttribute("aria-controls", view.id);
    open.addEventListener("click", () => toggleCase(c, ref, open, view));
    item.append(passages, open, view);
    list.append(item);
  });
  document.getElementById("meta").textContent =
    `index ${data.index_version} · ${data.retriever} · ${Math.round(data.timings_ms.total)} ms`;
  document.getElementById("results").hidden = false;
}

async function toggleCase(c, ref, button, view) {
  if (!view.hidden) {
    view.hidden = true;
    button.setAttribute("aria-expanded", "false");
    button.textContent = "Read the whole case";
    return;
  }
  button.disabled = true;
  try {
    let found = details.get(c.patient_uid);
    if (!found) {
      const response = await fetch(`/v1/cases/${encodeURIComponent(c.patient_uid)}`, { headers: headers() });
      const data = await response.json();
      if (!response.ok) { view.replaceChildren(el("p", problem(response.status, data), "error")); view.hidden = false; return; }
      found = data;
      details.set(c.patient_uid, found);
    }
    renderCase(view, found, c.passages);
    view.hidden = false;
    button.setAttribute("aria-expanded", "true");
    button.textContent = "Close the case";
  } catch (err) {
    view.replaceChildren(el("p", `The service did not answer (${err.message}).`, "error"));
    view.hidden = false;
  } finally {
    button.disabled = false;
  }
}

function renderCase(view, c, passages) {
  const facts = el("p", `${c.age_display || "age unknown"} · ${SEX[c.sex] || "sex unknown"} · uid ${c.patient_uid}`,
    "case-meta");
  const links = el("p", null, "links");
  if (c.article_url) {
    const a = el("a", `PubMed ${c.pmid}`);
    a.href = c.article_url; a.target = "_blank"; a.rel = "noopener noreferrer";
    links.append(a);
  }
  if (c.pmc_url) {
    const a = el("a", "Full text on PMC");
    a.href = c.pmc_url; a.target = "_blank"; a.rel = "noopener noreferrer";
    links.append(a);
  }
  const parts = [facts, links];
  if (c.synthetic) {
    parts.push(el("p", "Synthetic demo record: invented text. Its PubMed and PMC numbers are invented too, " +
      "so these links lead to unrelated articles.", "tag"));
  }
  const text = el("p", null, "case-text");
  text.append(withSentences(c.text, passages));
  parts.push(el("p", "The sentences that matched the description are highlighted.", "hint"), text);
  view.replaceChildren(...parts);
}

function showAnalysis(analysis, count) {
  const section = document.getElementById("analysis");
  const error = document.getElementById("analysis-error");
  section.hidden = analysis.generator === "none";
  showText(document.getElementById("analysis-text"), analysis.text, count);
  error.hidden = !analysis.error;
  error.textContent = analysis.error ? `The analysis is incomplete: ${analysis.error}` : "";
}

async function submit(event) {
  event.preventDefault();
  const status = document.getElementById("status");
  const button = document.getElementById("submit");
  const sex = document.getElementById("sex").value;
  const text = document.getElementById("text").value;
  const body = {
    text,
    k: numberOrNull("k") || 5,
    generate: document.getElementById("generate").checked,
    filters: { age_min: numberOrNull("age-min"), age_max: numberOrNull("age-max"), sex: sex || null },
  };
  button.disabled = true;
  status.textContent = "Searching…";
  try {
    const response = await fetch("/v1/query", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    const data = await response.json();
    if (!response.ok) {
      status.textContent = problem(response.status, data);
      return;
    }
    current = data;
    showCases(data, text);
    showAnalysis(data.analysis, data.cases.length);
    document.getElementById("followup").hidden = data.cases.length === 0;
    document.getElementById("followup-answer").replaceChildren();
    document.getElementById("followup-error").hidden = true;
    status.textContent = `${data.cases.length} similar cases`;
  } catch (err) {
    status.textContent = `The service did not answer (${err.message}).`;
  } finally {
    button.disabled = false;
    checkSynthetic();
  }
}

async function askFollowUp(event) {
  event.preventDefault();
  if (!current) return;
  const status = document.getElementById("followup-status");
  const button = document.getElementById("followup-submit");
  const error = document.getElementById("followup-error");
  const answer = document.getElementById("followup-answer");
  const body = {
    question: document.getElementById("followup-text").value,
    uids: current.cases.map((c) => c.patient_uid),
  };
  button.disabled = true;
  status.textContent = "Asking…";
  try {
    const response = await fetch("/v1/followup", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    const data = await response.json();
    if (!response.ok) {
      status.textContent = problem(response.status, data);
      return;
    }
    showText(answer, data.answer.text, data.cases.length);
    error.hidden = !data.answer.error;
    error.textContent = data.answer.error ? `The answer is incomplete: ${data.answer.error}` : "";
    status.textContent = data.answer.generator === "extractive" ? "Answered with quoted sentences" : "Answered";
  } catch (err) {
    status.textContent = `The service did not answer (${err.message}).`;
  } finally {
    button.disabled = false;
  }
}

// While the loaded index holds records of the synthetic sample, say so plainly.
async function checkSynthetic() {
  const banner = document.getElementById("synthetic-banner");
  try {
    const ready = await (await fetch("/readyz")).json();
    const count = ready.synthetic_records || 0;
    banner.hidden = count === 0;
    banner.textContent = count === 0 ? "" :
      `Demo data: ${count} of the ${ready.records} cases in this index are synthetic, invented by the ` +
      "project's sample generator. They are not real patients, and their PubMed and PMC links lead to " +
      "unrelated articles.";
  } catch (err) {
    banner.hidden = true;
  }
}

document.getElementById("query-form").addEventListener("submit", submit);
document.getElementById("followup-form").addEventListener("submit", askFollowUp);
checkSynthetic();
