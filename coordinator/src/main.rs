fn main() {
    println!("torch {}", tch::utils::has_cudart());
}
