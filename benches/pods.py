"""Creates (or deletes) many pod objects on the test API server.

Usage: python pods.py API_URL create COUNT FIRST_IP ROLE NODE [PREFIX]
       python pods.py API_URL delete COUNT [PREFIX]
IPs count up from FIRST_IP. These pods have no network namespace: they fill
the agent's index (and its warmer) the way a busy node's pods do.
"""

import ipaddress
import json
import sys
import urllib.request


def call(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return response.read()


def main():
    api, action, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if action == "create":
        first, role, node = ipaddress.ip_address(sys.argv[4]), sys.argv[5], sys.argv[6]
        prefix = sys.argv[7] if len(sys.argv) > 7 else "load"
        for n in range(count):
            ip = str(first + n)
            pod = {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"{prefix}-{n}", "namespace": "default",
                             "annotations": {"iam.amazonaws.com/role": role}},
                "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app"}]},
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
            }
            call("POST", f"{api}/api/v1/namespaces/default/pods", pod)
    else:
        prefix = sys.argv[4] if len(sys.argv) > 4 else "load"
        for n in range(count):
            call("DELETE", f"{api}/api/v1/namespaces/default/pods/{prefix}-{n}")


if __name__ == "__main__":
    main()
