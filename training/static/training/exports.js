// Export downloads with a progress bar. Without JavaScript each button submits the options
// form to the streamed export URL and the browser downloads it natively; with it, the export is
// fetched, its rows are counted as they arrive (line-based formats) against the row count the
// server announces (X-Export-Expected-Rows), and the file is saved when it is complete.
// Exports built by a background job first (data-job: hf) answer 202 with the job: its progress
// is polled and shown, then the finished file is fetched the same way.
(function () {
  "use strict";

  function filenameOf(response, fallback) {
    var header = response.headers.get("Content-Disposition") || "";
    var match = /filename="([^"]+)"/.exec(header);
    return match ? match[1] : fallback;
  }

  function humanBytes(n) {
    if (n < 1024) return n + " B";
    if (n < 1048576) return (n / 1024).toFixed(1) + " KiB";
    return (n / 1048576).toFixed(1) + " MiB";
  }

  function exportUrl(form, button) {
    var params = new URLSearchParams();
    new FormData(form).forEach(function (value, key) {
      if (value !== "") params.append(key, value);
    });
    var query = params.toString();
    return (button.dataset.apiUrl || button.formAction) + (query ? "?" + query : "");
  }

  function sleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  var PHASES = {rows: "Reading rows", dataset: "Saving the dataset", archive: "Writing the archive", done: "Done"};

  // Poll an export job until it has finished, showing its progress; returns the finished job.
  async function waitForJob(job, bar, status) {
    for (;;) {
      bar.max = 100;
      bar.value = job.progress || 0;
      if (job.status === "queued") {
        status.textContent = "Queued: waiting for a worker…";
      } else if (job.status === "running") {
        status.textContent = (PHASES[job.phase] || "Building") +
          (job.phase === "rows" && job.rows_total ? " " + job.rows_done.toLocaleString() + " / " +
            job.rows_total.toLocaleString() : "…");
      } else {
        return job;
      }
      await sleep(1000);
      var response = await fetch(job.url, {credentials: "same-origin", headers: {Accept: "application/json"}});
      if (!response.ok) throw new Error("could not follow export job " + job.id + " (" + response.status + ")");
      job = await response.json();
    }
  }

  async function download(form, button) {
    var item = button.closest("[data-export-item]");
    var bar = item.querySelector(".export-progress");
    var status = item.querySelector(".export-status");
    var unit = button.dataset.unit || "rows";
    button.disabled = true;
    button.classList.add("is-busy");
    bar.hidden = false;
    bar.removeAttribute("value");
    status.textContent = "Starting…";
    try {
      var response = await fetch(exportUrl(form, button), {credentials: "same-origin"});
      if (response.status === 202) {
        var job = await waitForJob(await response.json(), bar, status);
        if (job.status !== "succeeded") throw new Error(job.error || "the export job was " + job.status + ".");
        bar.removeAttribute("value");
        status.textContent = "Downloading…";
        response = await fetch(job.download_url, {credentials: "same-origin"});
      }
      if (!response.ok) {
        var detail = response.statusText;
        try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
        throw new Error(detail);
      }
      var expected = parseInt(response.headers.get("X-Export-Expected-Rows") || "", 10);
      var lineBased = unit !== "bytes";
      var headerLines = response.headers.get("Content-Type").indexOf("text/csv") === 0 ? 1 : 0;
      var reader = response.body.getReader();
      var chunks = [], bytes = 0, lines = 0;
      for (;;) {
        var step = await reader.read();
        if (step.done) break;
        chunks.push(step.value);
        bytes += step.value.length;
        if (lineBased) {
          for (var i = 0; i < step.value.length; i++) if (step.value[i] === 10) lines++;
        }
        var rows = Math.max(0, lines - headerLines);
        if (lineBased && expected > 0) {
          bar.max = expected;
          bar.value = Math.min(rows, expected);
          status.textContent = rows.toLocaleString() + " / " + expected.toLocaleString() + " " + unit;
        } else {
          status.textContent = humanBytes(bytes) + (lineBased ? " · " + rows.toLocaleString() + " " + unit : "");
        }
      }
      var blob = new Blob(chunks, {type: response.headers.get("Content-Type") || "application/octet-stream"});
      var link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = filenameOf(response, "export");
      document.body.appendChild(link);
      link.click();
      link.remove();
      setTimeout(function () { URL.revokeObjectURL(link.href); }, 10000);
      bar.max = 1;
      bar.value = 1;
      status.textContent = "Done: " + humanBytes(bytes) +
        (lineBased ? ", " + Math.max(0, lines - headerLines).toLocaleString() + " " + unit : "");
    } catch (error) {
      bar.hidden = true;
      status.textContent = "Failed: " + error.message;
    } finally {
      button.disabled = false;
      button.classList.remove("is-busy");
    }
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-export-button]");
    if (!button || !window.ReadableStream || !window.fetch) return;  // native download instead
    event.preventDefault();
    download(button.form, button);
  });
})();
