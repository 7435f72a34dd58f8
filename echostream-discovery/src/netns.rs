//! Is this process in a network namespace of its own?
//!
//! mdns-sd must not run in the machine's network namespace on the project's
//! machines (it multicasts on the real interfaces even when told to use
//! loopback only); the example checks [`isolation`] before starting it.

/// Interface names of this process's network namespace (Linux: `/proc/self/net/dev`).
pub fn interfaces() -> std::io::Result<Vec<String>> {
    let dev = std::fs::read_to_string("/proc/self/net/dev")?;
    Ok(dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim().to_owned()))
        .collect())
}

/// `Ok(why)` when this process is believed to be in a network namespace of its
/// own, `Err(why not)` otherwise (also when it cannot tell).
///
/// It compares `/proc/self/ns/net` with PID 1's; where PID 1's link cannot be
/// read (containers), a namespace whose only interface is `lo` counts as
/// isolated, anything else does not.
pub fn isolation() -> Result<String, String> {
    let mine =
        std::fs::read_link("/proc/self/ns/net").map_err(|e| format!("cannot read /proc/self/ns/net: {e}"))?;
    if let Ok(init) = std::fs::read_link("/proc/1/ns/net") {
        return if init == mine {
            Err(format!(
                "this process shares PID 1's network namespace ({})",
                mine.display()
            ))
        } else {
            Ok(format!(
                "network namespace {} differs from PID 1's {}",
                mine.display(),
                init.display()
            ))
        };
    }
    let names = interfaces().map_err(|e| format!("cannot list interfaces: {e}"))?;
    if names.iter().all(|n| n == "lo") {
        Ok(format!(
            "network namespace {} has only the loopback interface",
            mine.display()
        ))
    } else {
        Err(format!(
            "cannot read PID 1's network namespace, and this one ({}) has interfaces {}",
            mine.display(),
            names.join(", ")
        ))
    }
}
