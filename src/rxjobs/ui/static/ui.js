// rxjobs ui: live updates by polling. Our own small script, no external code.
// Text from the share dir is only ever set with textContent, or taken as HTML
// the server rendered and escaped (the rows of the jobs table).
"use strict";

(function () {
  const POLL_ROWS_MS = 3000;
  const POLL_JOB_MS = 1000;

  function ago(iso) {
    if (!iso) return "";
    const seconds = (Date.now() - Date.parse(iso)) / 1000;
    if (seconds < 0) return "in the future";
    const units = [["d", 86400], ["h", 3600], ["min", 60]];
    for (const [unit, size] of units) {
      if (seconds >= size) return Math.floor(seconds / size) + " " + unit + " ago";
    }
    return Math.floor(seconds) + " s ago";
  }

  function refreshAgo(root) {
    for (const el of (root || document).querySelectorAll(".ago[data-since]")) {
      el.textContent = ago(el.dataset.since);
    }
  }

  function said(text) {
    const el = document.getElementById("live-status");
    if (el) el.textContent = text;
  }

  function stamp() {
    return new Date().toLocaleTimeString();
  }

  // The random path the page is served under (its cookie is sent only there).
  function base() {
    const meta = document.querySelector('meta[name="rxjobs-base"]');
    return meta ? meta.getAttribute("content") : "";
  }

  async function get(url, headers) {
    const response = await fetch(url, { credentials: "same-origin", headers: headers || {} });
    if (!response.ok) throw new Error(response.status + " " + response.statusText);
    return response;
  }

  // -- the jobs table ------------------------------------------------------------------
  function liveRows() {
    const body = document.getElementById("job-rows");
    if (!body) return;
    const selectAll = document.getElementById("select-all");
    const form = document.getElementById("cleanup-form");
    const boxes = () => body.querySelectorAll("input[type=checkbox][name=job_id]");
    if (selectAll) {
      selectAll.addEventListener("change", () => {
        for (const box of boxes()) box.checked = selectAll.checked;
      });
    }
    if (form) {
      form.addEventListener("submit", (event) => {
        if (![...boxes()].some((box) => box.checked)) {
          event.preventDefault();
          said("select the jobs to clean up first");
        }
      });
    }
    const table = document.getElementById("jobs-table");
    let version = table ? table.dataset.version : "";
    let refreshes = 0;

    // The user is selecting text in, or working a control of, the table: rows are
    // not added, removed or moved under them (cells still update in place).
    function busyInTable() {
      const selection = window.getSelection();
      const selecting = selection && !selection.isCollapsed && selection.rangeCount > 0
        && body.contains(selection.getRangeAt(0).commonAncestorContainer);
      return selecting || body.contains(document.activeElement);
    }

    function setText(el, text) {
      if (el && el.textContent !== text) el.textContent = text;
    }

    function setAttr(el, name, value) {
      if (el && el.getAttribute(name) !== value) el.setAttribute(name, value);
    }

    // One row's cells, changed in place: only a cell whose text differs is touched,
    // so a selection or focus elsewhere in the row survives.
    function updateRow(tr, row) {
      setAttr(tr, "data-state", row.state);
      const badge = tr.querySelector(".state");
      setText(badge, row.badge);
      setAttr(badge, "class", "state state-" + row.state.replace(/[^a-z]/g, ""));
      setAttr(badge, "title", row.reason);
      const bar = tr.querySelector("progress");
      setAttr(bar, "max", String(row.n_tasks || 1));
      setAttr(bar, "value", String(row.n_tasks ? row.done : 0));
      setText(tr.querySelector(".counts"), row.done + "/" + row.n_tasks + " tasks · "
        + (row.n_runs === null ? "?" : row.n_runs) + " runs");
      const size = tr.querySelector("td.size");
      setAttr(size, "data-bytes", String(row.bytes));
      setText(size, row.size);
    }

    async function replaceRows() {
      const checked = new Set([...boxes()].filter((b) => b.checked).map((b) => b.value));
      const response = await get(window.location.href, { "X-Fragment": "rows" });
      body.innerHTML = await response.text();  // rendered and escaped by the server
      for (const box of boxes()) box.checked = checked.has(box.value);
      refreshAgo(body);
    }

    let busy = false;
    async function tick() {
      if (busy || document.hidden) return;
      busy = true;
      try {
        const response = await fetch(base() + "/api/rows" + window.location.search, {
          credentials: "same-origin", cache: "no-store", headers: { "If-None-Match": version } });
        if (response.status === 304) {
          said("up to date " + stamp());
        } else if (!response.ok) {
          throw new Error(response.status + " " + response.statusText);
        } else {
          const data = await response.json();
          const shown = [...body.querySelectorAll("tr[data-job-id]")];
          const same = shown.length === data.rows.length
            && shown.every((tr, i) => tr.dataset.jobId === data.rows[i].job_id);
          if (same) {
            data.rows.forEach((row, i) => updateRow(shown[i], row));
            version = data.version;
            said("updated " + stamp());
          } else if (busyInTable()) {
            const byId = new Map(shown.map((tr) => [tr.dataset.jobId, tr]));
            for (const row of data.rows) if (byId.has(row.job_id)) updateRow(byId.get(row.job_id), row);
            said("new rows wait while you select or type in the table");
          } else {
            await replaceRows();
            version = data.version;
            said("updated " + stamp());
          }
          setText(document.getElementById("page-of"), "page " + data.page + " of " + data.pages);
          setText(document.getElementById("jobs-total"), String(data.total));
        }
        refreshes += 1;
        if (table) table.dataset.refreshes = String(refreshes);
      } catch (error) {
        said("live updates paused: " + error.message);
      } finally {
        busy = false;
      }
    }
    window.setInterval(tick, POLL_ROWS_MS);
  }

  // -- one job -------------------------------------------------------------------------
  function liveJob() {
    const output = document.getElementById("output");
    if (!output || output.dataset.terminal !== "no") return;
    const jobId = output.dataset.jobId;
    const state = document.getElementById("job-state");
    const reason = document.getElementById("job-reason");
    const terminal = new Set(["finished", "failed", "canceled", "missing"]);
    let busy = false;
    let timer = null;
    async function tick() {
      if (busy || document.hidden) return;
      busy = true;
      try {
        const text = await (await get(base() + "/api/jobs/" + encodeURIComponent(jobId) + "/output")).text();
        const atBottom = output.scrollTop + output.clientHeight >= output.scrollHeight - 4;
        if (output.textContent !== text) output.textContent = text;
        if (atBottom) output.scrollTop = output.scrollHeight;
        const rows = await (await get(base() + "/api/status?job_id=" + encodeURIComponent(jobId))).json();
        const row = rows[0];
        if (row && state) {
          state.textContent = row.state;
          state.className = "state state-" + row.state.replace(/[^a-z]/g, "");
          if (reason) reason.textContent = row.reason;
          if (terminal.has(row.state)) {
            window.clearInterval(timer);
            window.location.reload();  // the timeline and actions of an ended job
          }
        }
        said("updated " + stamp());
      } catch (error) {
        said("live updates paused: " + error.message);
      } finally {
        busy = false;
      }
    }
    timer = window.setInterval(tick, POLL_JOB_MS);
  }

  // -- copy an id ----------------------------------------------------------------------
  // A "copy" button names the element whose text it copies (data-copy).  The
  // Clipboard API needs a secure context and the user's permission; without it,
  // the text is selected for the user to copy with the keyboard.
  function selectText(el) {
    const range = document.createRange();
    range.selectNodeContents(el);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  async function copyFrom(button) {
    const source = document.getElementById(button.dataset.copy);
    if (!source) return;
    const text = source.textContent.trim();
    try {
      if (!navigator.clipboard || !window.isSecureContext) throw new Error("no clipboard");
      await navigator.clipboard.writeText(text);
      button.dataset.copied = "yes";
      said("copied " + text);
    } catch (error) {
      selectText(source);
      button.dataset.copied = "selected";
      said("selected " + text + ": press Ctrl+C (⌘C) to copy");
    }
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest ? event.target.closest("button.copy") : null;
    if (button) copyFrom(button);
  });

  document.addEventListener("DOMContentLoaded", () => {
    refreshAgo();
    window.setInterval(refreshAgo, 30000);
    liveRows();
    liveJob();
  });
})();
