/* The reviewer's prompt page loads the reward model's scores with htmx after it has rendered
 * ([data-reward-loader]). A request that fails (server error, network) would leave "Scoring…"
 * forever: say that the scores could not be loaded instead, and mark the cells as empty. */
(function () {
  "use strict";

  function failed(event) {
    var loader = event.target;
    if (!loader || !loader.matches || !loader.matches("[data-reward-loader]")) return;
    var status = event.detail && event.detail.xhr ? " (HTTP " + event.detail.xhr.status + ")" : "";
    loader.textContent = "Reward scores could not be loaded" + status + ". The labels above do not depend on them.";
    loader.classList.add("reward-error");
    document.querySelectorAll(".review-matrix td.col-reward").forEach(function (cell) {
      cell.textContent = "—";
    });
  }

  document.addEventListener("htmx:responseError", failed);
  document.addEventListener("htmx:sendError", failed);
})();
