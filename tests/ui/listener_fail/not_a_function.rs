#[echostream::listener("user.logged_out")]
struct OnLogout;

fn main() {}
