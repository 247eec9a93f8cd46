//! nginx (Debian package `nginx`, installed by `cargo xtask setup`) run inside a namespace from a
//! configuration of its own in a temporary directory: no system configuration, no modules.

use std::{
    net::TcpStream,
    path::PathBuf,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use crate::{netns::NetNs, unique_name};

/// A running nginx; killed and its directory removed on drop.
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    pub dir: PathBuf,
}

impl Nginx {
    /// Starts nginx in the foreground (one process, no master) with `server` (the inside of one
    /// `server { }` block, `listen` included) and `http` (more `http { }` directives), and waits
    /// until it accepts on `addr:port`.
    pub fn start(ns: &NetNs, addr: &str, port: u16, http: &str, server: &str) -> Self {
        let dir = std::env::temp_dir().join(unique_name("mirror-nginx-"));
        std::fs::create_dir_all(&dir).expect("nginx dir");
        let config = format!(
            "daemon off; master_process off; worker_processes 1; pid {dir}/nginx.pid;\n\
             error_log {dir}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
             access_log off; client_body_temp_path {dir}/body;\n\
             {http}\n\
             server {{ listen {addr}:{port}; {server} }}\n\
             }}\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), config).expect("nginx.conf");
        let child = ns
            .command("nginx")
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx (Debian package nginx; cargo xtask setup installs it)");
        let nginx = Self { child, dir };
        let address = format!("{addr}:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let up = crate::netns::in_netns(ns, {
                let address = address.clone();
                move || TcpStream::connect(address.as_str()).is_ok()
            });
            if up {
                return nginx;
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not listen on {address}; its error log:\n{}",
                std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
