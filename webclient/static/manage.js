/* Administration page: enrol a WebCrypto signing key, then sign administrative actions. */
(function () {
  "use strict";
  var me = null;

  async function refresh() {
    var signer = await cgcrypto.loadSigner();
    document.getElementById("signer-status").textContent = signer && signer.account === me.account
      ? "已登记签名密钥（" + signer.account + "）" : "尚未登记签名密钥";
  }

  document.addEventListener("DOMContentLoaded", async function () {
    me = await (await fetch("/auth/whoami", { credentials: "same-origin" })).json();
    document.getElementById("who").textContent = me.account;
    await refresh();
    document.getElementById("enrol").addEventListener("click", async function () {
      var code = document.getElementById("enrol-code").value.trim();
      if (!code) {
        document.getElementById("signer-status").textContent = "请先输入管理员提供的一次性登记码";
        return;
      }
      try {
        await cgcrypto.enrol(me.account, code);
        document.getElementById("enrol-code").value = "";
        await refresh();
      } catch (e) {
        document.getElementById("signer-status").textContent = "登记失败：" + e.message;
      }
    });
    document.getElementById("add-account").addEventListener("submit", async function (ev) {
      ev.preventDefault();
      var f = ev.target, params = { name: f.name.value, roles: [f.role.value] };
      if (f.org.value) { params.org = f.org.value; }
      var out = document.getElementById("result");
      try {
        var reply = await cgcrypto.signAndPost("/admin/accounts", "account.add", "accounts", params);
        out.textContent = reply.status === 201
          ? "已创建账户 " + reply.body.name + "（签名操作 #" + reply.body.signed_action + "）"
          : "被拒绝：" + (reply.body ? reply.body.message : reply.status);
      } catch (e) {
        out.textContent = "失败：" + e.message;
      }
    });
  });
}());
