"use strict";
// Profile editor: show only the fieldset of each payload's kind. Without this script
// every fieldset stays visible, and the server still checks what each kind needs.
(function () {
    const KIND_SELECT = 'select[name$="-kind"]';

    function showKindFields(form) {
        const select = form && form.querySelector(KIND_SELECT);
        if (!select) {
            return;
        }
        form.querySelectorAll("fieldset.payload-kind").forEach(function (fieldset) {
            fieldset.hidden = !fieldset.classList.contains("payload-kind-" + select.value);
        });
    }

    document.addEventListener("DOMContentLoaded", function () {
        document.querySelectorAll(".inline-related").forEach(showKindFields);
    });
    document.addEventListener("change", function (event) {
        if (event.target.matches(KIND_SELECT)) {
            showKindFields(event.target.closest(".inline-related"));
        }
    });
    document.addEventListener("formset:added", function (event) {
        showKindFields(event.target);
    });
})();
