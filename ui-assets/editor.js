// configd's JSON editor: CodeMirror 6 over a plain <textarea data-json-editor>, bundled by `make ui-assets` into
// configd/static/editor.js (committed, so running configd needs no Node). Without JavaScript the textarea still works.
//
// The editor shows the server's schema errors (a list of JSON Pointer paths in the page) as diagnostics at their
// paths, and JSON syntax errors as you type. Tab indents; Escape then Tab (or Shift-Tab) leaves the editor, as in
// every CodeMirror 6 editor (its "tab focus mode"), so the page works with the keyboard only.
import { EditorView, basicSetup } from "codemirror";
import { keymap } from "@codemirror/view";
import { indentWithTab } from "@codemirror/commands";
import { json, jsonParseLinter } from "@codemirror/lang-json";
import { syntaxTree } from "@codemirror/language";
import { linter, lintGutter } from "@codemirror/lint";

function unescapePointer(segment) {
  return segment.replace(/~1/g, "/").replace(/~0/g, "~");
}

// The text range of the value at a JSON Pointer (RFC 6901) in the editor's document, or null.
function rangeOf(state, pointer) {
  let node = syntaxTree(state).topNode.firstChild;
  const segments = pointer === "" || pointer === "/" ? [] : pointer.split("/").slice(1).map(unescapePointer);
  let nameNode = null;
  for (const segment of segments) {
    if (!node) return null;
    let next = null;
    if (node.name === "Object") {
      for (let child = node.firstChild; child; child = child.nextSibling) {
        if (child.name !== "Property") continue;
        const key = child.firstChild;
        if (!key || key.name !== "PropertyName") continue;
        let text = state.sliceDoc(key.from, key.to);
        try { text = JSON.parse(text); } catch (e) { /* keep the raw text */ }
        if (text === segment) {
          nameNode = key;
          next = key.nextSibling;
          while (next && next.name === ":") next = next.nextSibling;
          break;
        }
      }
    } else if (node.name === "Array") {
      let index = 0;
      for (let child = node.firstChild; child; child = child.nextSibling) {
        if (child.name === "[" || child.name === "]" || child.name === ",") continue;
        if (String(index) === segment) { next = child; nameNode = null; break; }
        index += 1;
      }
    }
    if (!next) return nameNode ? { from: nameNode.from, to: nameNode.to } : { from: node.from, to: node.from + 1 };
    node = next;
  }
  if (!node) return null;
  return { from: node.from, to: Math.min(node.to, node.from + 200) };
}

function schemaErrors() {
  const items = document.querySelectorAll("[data-error-path]");
  return Array.from(items, (item) => ({ path: item.getAttribute("data-error-path"), message: item.getAttribute("data-error-message") }));
}

function schemaLinter(errors, original) {
  return linter((view) => {
    // Server errors describe the submitted text; once it is edited they may no longer apply where they point.
    if (view.state.doc.toString() !== original) return [];
    const found = [];
    for (const error of errors) {
      const range = rangeOf(view.state, error.path || "");
      const at = range || { from: 0, to: Math.min(1, view.state.doc.length) };
      found.push({ from: at.from, to: at.to, severity: "error", message: `${error.path || "/"}: ${error.message}`, source: "schema" });
    }
    return found;
  }, { delay: 0 });
}

function attach(textarea) {
  const errors = schemaErrors();
  const original = textarea.value;
  const label = textarea.getAttribute("aria-label") || "JSON document";
  // The page's Content-Security-Policy admits CodeMirror's injected theme only with this response's nonce.
  const nonceMeta = document.querySelector('meta[name="csp-nonce"]');
  const nonce = nonceMeta ? nonceMeta.getAttribute("content") : "";
  const view = new EditorView({
    doc: textarea.value,
    extensions: [
      nonce ? EditorView.cspNonce.of(nonce) : [],
      basicSetup,
      keymap.of([indentWithTab]),
      json(),
      linter(jsonParseLinter()),
      schemaLinter(errors, original),
      lintGutter(),
      EditorView.lineWrapping,
      EditorView.contentAttributes.of({ "aria-label": label, "aria-describedby": "editor-help" }),
      EditorView.updateListener.of((update) => {
        if (update.docChanged) textarea.value = update.state.doc.toString();
      }),
    ],
  });
  textarea.hidden = true;
  textarea.setAttribute("aria-hidden", "true");
  textarea.tabIndex = -1;
  textarea.insertAdjacentElement("afterend", view.dom);
  view.dom.classList.add("json-editor");
  view.dom.id = `${textarea.id}-editor`;
  const form = textarea.form;
  if (form) form.addEventListener("submit", () => { textarea.value = view.state.doc.toString(); });
  // Links in the error list move the cursor to the error's path.
  document.querySelectorAll("[data-error-path] a[data-jump]").forEach((link) => {
    link.addEventListener("click", (event) => {
      event.preventDefault();
      const range = rangeOf(view.state, link.closest("[data-error-path]").getAttribute("data-error-path") || "");
      if (range) view.dispatch({ selection: { anchor: range.from, head: range.to }, scrollIntoView: true });
      view.focus();
    });
  });
  window.configdEditor = view;
}

document.querySelectorAll("textarea[data-json-editor]").forEach(attach);
