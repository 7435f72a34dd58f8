#[echostream::handler("audio.play")]
struct HandlePlay;

fn main() {}
