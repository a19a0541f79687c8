//! Who may reach the broker, and how: TLS to a RabbitMQ listener with
//! certificates made for the run, client-certificate logins, and users
//! holding only the rights their role needs. `#[ignore]`d, since they
//! need the broker of `scripts/tls-broker.sh` and change its users;
//! `scripts/test.sh` starts it and runs them on their own:
//! `cargo test --workspace --test access -- --ignored --test-threads 1`.

mod broker;
mod permissions;
mod tls;
