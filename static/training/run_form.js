/* The "Start a training run" form: the config textarea follows the chosen kind.
 *
 * The form carries every kind's defaults in data-defaults (JSON). Switching the kind replaces the
 * config with the new kind's defaults when it still holds the old kind's (untouched); an edited
 * config is kept and the note says so (the Reset button takes the defaults). The settings table
 * of the chosen kind is shown. Plain JS, no build step.
 */
(function () {
  "use strict";

  function same(a, b) {
    return JSON.stringify(a) === JSON.stringify(b);
  }

  function parse(text) {
    try {
      return JSON.parse(text);
    } catch (e) {
      return undefined;
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.querySelector("[data-run-form]");
    if (!form) return;
    var defaults = parse(form.dataset.defaults) || {};
    var kind = form.querySelector('select[name="kind"]');
    var config = form.querySelector('textarea[name="config"]');
    var reset = form.querySelector("[data-config-reset]");
    var note = form.querySelector("[data-config-note]");
    var noteText = note ? note.textContent : "";
    if (!kind || !config) return;
    var current = kind.value;

    function pretty(k) {
      return JSON.stringify(defaults[k] || {}, null, 2);
    }

    function show(k) {
      document.querySelectorAll("[data-config-help]").forEach(function (table) {
        table.hidden = table.dataset.configHelp !== k;
      });
      form.querySelectorAll("[data-config-kind]").forEach(function (el) {
        el.textContent = k;
      });
    }

    kind.addEventListener("change", function () {
      var next = kind.value;
      var value = config.value.trim();
      var untouched = value === "" || same(parse(value), defaults[current]);
      if (untouched) {
        config.value = pretty(next);
        if (note) note.textContent = noteText;
      } else if (note) {
        note.textContent = "Your edited config was kept. “Reset” replaces it with the " + next + " defaults.";
      }
      current = next;
      show(next);
    });

    if (reset) {
      reset.addEventListener("click", function () {
        config.value = pretty(kind.value);
        if (note) note.textContent = noteText;
        config.focus();
      });
    }
    show(current);
  });
})();
