"""Helpers for the deployment tests (tests/integ/test_deploy*.py): a
`make dist` tarball, and Host, one deploy/bootstrap.sh installation in its
own directories, run here or inside a testbed host.
SPDX-License-Identifier: MIT
"""
import hashlib
import hmac
import os
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
BOOTSTRAP = os.path.join(ROOT, "deploy", "bootstrap.sh")
FAKE_AWS = os.path.join(ROOT, "tests", "deploy", "fake-aws")


def make_dist(outdir):
    """make -f deploy/dist.mk dist BUILD=outdir; returns the tarball."""
    r = subprocess.run(["make", "-s", "-f", "deploy/dist.mk", "dist",
                        "BUILD=" + outdir], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    if r.returncode != 0:
        raise AssertionError("make dist failed:\n" + r.stdout + r.stderr)
    path = r.stdout.strip().splitlines()[-1]
    assert os.path.isfile(path), path
    return path


def shared_tmp(prefix="sn-deploy-"):
    """A directory the service user (nobody) can reach, unlike pytest's
    tmp_path (0700)."""
    d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o755)
    return d


def fake_aws_env(log, secret=None, aws_dir=None):
    """The environment that puts tests/deploy/fake-aws/aws first. aws_dir
    holds the fake's secrets (secret-<id>) and SSM parameters
    (param-<name>)."""
    env = dict(os.environ, PATH=FAKE_AWS + ":" + os.environ["PATH"],
               FAKE_AWS_LOG=log)
    if secret is not None:
        env["FAKE_AWS_SECRET"] = secret
    if aws_dir is not None:
        env["FAKE_AWS_DIR"] = aws_dir
    return env


def fake_key(name):
    """A secret id or parameter name as the fake AWS CLI files it."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def sensor_token(master, sensor):
    """A sensor's token: hex HMAC-SHA256(master secret, sensor id)."""
    return hmac.new(master.encode(), sensor.encode(),
                    hashlib.sha256).hexdigest()


def set_arg(args, opt, value):
    """args with the value of option opt replaced (or appended)."""
    args = list(args)
    if opt in args:
        args[args.index(opt) + 1] = value
    else:
        args += [opt, value]
    return args


def tls_support(build):
    """None when the built binaries do TLS and tokens as the deploy needs
    (the server speaks TLS with --tls-cert/--tls-key, the client has
    --tls, --tls-ca and --token-file), else why not."""
    client = os.path.join(build, "sensornet-client")
    server = os.path.join(build, "sensornet-server")
    r = subprocess.run([client, "--help"], capture_output=True, text=True)
    for opt in ("--tls", "--tls-ca", "--token-file"):
        if not re.search(r"(^|\s)%s( |$)" % opt, r.stdout + r.stderr, re.M):
            return "sensornet-client has no %s yet" % opt
    d = tempfile.mkdtemp(prefix="sn-tlscheck-")
    proc = None
    try:
        key, crt = os.path.join(d, "k.pem"), os.path.join(d, "c.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                        "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", key, "-out", crt, "-days", "2", "-subj",
                        "/CN=localhost", "-addext",
                        "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True)
        port = free_port()
        proc = subprocess.Popen(
            [server, "--listen", "127.0.0.1:%d" % port, "--http", "off",
             "--db", os.path.join(d, "db"), "--log",
             os.path.join(d, "log.txt"), "--tls-cert", crt, "--tls-key",
             key], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            cwd=d)
        ctx = ssl.create_default_context(cafile=crt)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), 2) as s:
                    with ctx.wrap_socket(s, server_hostname="127.0.0.1") \
                            as t:
                        t.sendall(b"PING\n")
                        if t.makefile("rb").readline() == b"PONG\n":
                            return None
                        return "sensornet-server: no PONG over TLS"
            except ConnectionRefusedError:
                time.sleep(0.1)
            except (ssl.SSLError, OSError) as e:
                return "sensornet-server does not speak TLS yet (%s)" % e
        return "sensornet-server did not start"
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        shutil.rmtree(d, ignore_errors=True)


def free_port(addr="127.0.0.1"):
    with socket.socket() as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


def stage0_args(script):
    """The bootstrap arguments of a rendered UserData: its args=( ... )."""
    m = re.search(r"(?ms)^args=\((.*?)\)$", script)
    assert m, "no args=( ... ) in the UserData"
    return shlex.split(m.group(1))


class Host:
    """One bootstrap.sh installation (no systemd): etc/, var/ and run/
    under root, binaries under root/usr. launch(argv, **popen_kw) starts a
    process (default: here; a testbed passes tb.popen for its host)."""

    def __init__(self, base, name, dist, user="nobody", env=None,
                 work=None, launch=None):
        self.name = name
        self.root = os.path.join(base, name)
        self.prefix = os.path.join(self.root, "usr")
        self.work = work or os.path.join(self.prefix, "src", "sensornet")
        self.dist = dist
        self.user = user
        self.env = env
        self.launch = launch or subprocess.Popen

    def argv(self, *args):
        return ["bash", BOOTSTRAP, "--no-systemd", "--root", self.root,
                "--prefix", self.prefix, "--artifact", self.dist,
                "--work-dir", self.work, "--user", self.user] + list(args)

    def start(self, *args):
        """bootstrap.sh ARGS..., running; finish() waits for it."""
        return self.launch(self.argv(*args), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=self.env,
                           stdin=subprocess.DEVNULL)

    @staticmethod
    def finish(p, what, timeout=300, check=True):
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            raise AssertionError("%s: bootstrap timed out:\n%s%s"
                                 % (what, out, err))
        if check:
            assert p.returncode == 0, "%s: bootstrap failed (%d):\n%s%s" % (
                what, p.returncode, out, err)
        return p.returncode, out, err

    def bootstrap(self, *args, timeout=300, check=True):
        return self.finish(self.start(*args), self.name, timeout, check)

    def path(self, *p):
        return os.path.join(self.root, *p)

    def read(self, *p):
        try:
            with open(self.path(*p), encoding="utf-8",
                      errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log(self):
        return self.read("var", "log", "sensornet", "log.txt")

    def out(self, unit):
        return self.read("var", "log", "sensornet", unit + ".out")

    def pids(self):
        d = self.path("run", "sensornet")
        out = {}
        if os.path.isdir(d):
            for f in os.listdir(d):
                if f.endswith(".pid"):
                    with open(os.path.join(d, f)) as fh:
                        out[f[:-4]] = int(fh.read().strip())
        return out

    def stop(self):
        subprocess.run(["bash", BOOTSTRAP, "--stop", "--no-systemd",
                        "--root", self.root], capture_output=True,
                       timeout=60)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def remove(path):
    shutil.rmtree(path, ignore_errors=True)
